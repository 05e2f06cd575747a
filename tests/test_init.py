"""`usagg init`: a packaged study written to a folder validates from anywhere, never overwrites, and runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cli_run
import pytest

from usagg.spec.load import load_study

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return cli_run.run_cli(args, monkeypatch, capsys, columns=200)


def test_repo_studies_are_the_packaged_studies() -> None:
    """studies/*.yaml are byte-identical copies of usagg/studies/*.yaml, the source: edit there, then copy."""
    packaged = {p.name: p.read_bytes() for p in (REPO / "usagg" / "studies").glob("*.yaml")}
    assert sorted(packaged) == ["demo.yaml", "fmc_uia.yaml", "known.yaml", "known_conflict.yaml"]
    assert {p.name: p.read_bytes() for p in (REPO / "studies").glob("*.yaml")} == packaged


@pytest.mark.parametrize("name", ["demo", "fmc_uia", "known", "known_conflict"])
def test_init_writes_a_study_that_validates_from_anywhere(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "--from", name, "mine"], monkeypatch, capsys)
    assert code == 0, text
    written = tmp_path / "mine" / f"{name}.yaml"
    assert text.startswith(f"wrote mine/{name}.yaml: the study 'mine' (from the packaged study {name!r})")
    assert f"  usagg run mine/{name}.yaml\n" in text and "  usagg report runs/mine\n" in text
    shipped = (REPO / "usagg" / "studies" / f"{name}.yaml").read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, written.read_text().splitlines(), strict=True) if a != b]
    assert (f"name: {name}", "name: mine") in changed  # else only comments: the file and run store they name
    assert all(a.partition("#")[0] == b.partition("#")[0] for a, b in changed if a != f"name: {name}")
    assert f"usagg run mine/{name}.yaml" in written.read_text()  # its header names the file written
    assert f"runs/{name}" not in written.read_text()  # and the run store: its own
    assert ("data.root in mine/fmc_uia.yaml is a placeholder (/path/to/FMC_UIA)" in text) == (name == "fmc_uia")
    reference = load_study(REPO / "studies" / f"{name}.yaml").model_copy(update={"name": "mine"})
    assert load_study(written) == reference
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_study(written) == reference
    monkeypatch.chdir(written.parent)
    assert load_study(f"{name}.yaml") == reference


def test_init_never_overwrites_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "d" / "demo.yaml"
    assert run_cli(["init", str(tmp_path / "d")], monkeypatch, capsys)[0] == 0
    target.write_text("name: edited\n")
    code, text = run_cli(["init", str(tmp_path / "d")], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text
    assert f"{target} already exists; nothing was written" in text and "--force" in text
    assert target.read_text() == "name: edited\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["demo.yaml"]
    code, text = run_cli(["init", "--force", str(tmp_path / "d")], monkeypatch, capsys)
    assert code == 0, text
    assert load_study(target).name == "d"


def test_init_user_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["init", "--from", "dmo", str(tmp_path / "x")], monkeypatch, capsys)
    assert (
        code == 2
        and "no packaged study of that name (did you mean 'demo'?); packaged studies: demo, fmc_uia, known" in text
    )
    assert not (tmp_path / "x").exists()
    (tmp_path / "f").write_text("")
    code, text = run_cli(["init", str(tmp_path / "f")], monkeypatch, capsys)
    assert code == 2 and "is a file, not a folder" in text


@pytest.mark.parametrize(
    ("folder", "name"),
    [("my study", "my_study"), ("Étude 2/", "Etude_2"), ("runs/-v2.", "v2"), ("a" * 90, "a" * 80), ("___", None)],
)
def test_the_study_is_named_after_its_folder(folder: str, name: str | None) -> None:
    """`usagg init DIR` wrote `name: demo`, the demo's own: after `make demo` the user's edited copy was refused at
    `usagg run` (runs/demo holds study 'demo' from studies/demo.yaml). DIR's name, made a valid study name, is its."""
    from usagg.cli.init import study_name

    assert study_name(Path(folder)) == name


@pytest.mark.parametrize("folder", ["1e5", "123", "on", "null", "007", "1.0"])
def test_a_name_yaml_would_read_as_no_string_is_quoted(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg init 1e5` wrote `name: 1e5`, a float to usagg's YAML 1.2 reading: an invalid spec left behind; `123`
    was refused as 'not plain text'. The name is quoted where YAML would read it as no string."""
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", folder], monkeypatch, capsys)
    assert code == 0, text
    assert f'name: "{folder}"' in (tmp_path / folder / "demo.yaml").read_text()
    assert load_study(tmp_path / folder / "demo.yaml").name == folder


def test_the_next_commands_paste_for_a_folder_with_a_leading_dash_and_a_taken_name_gets_a_free_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed commands work pasted: `./-dash/demo.yaml`, not an option. A DIR whose name's run store holds
    another study of that name, run from another file (`demo` after `make demo`), gets a name of its own (init
    warned that `usagg run` would refuse, exited 0 and printed a `usagg run` to be refused)."""
    from tests.tiny_study import small_study
    from usagg.plan import plan
    from usagg.store import RunStore

    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "--", "-dash"], monkeypatch, capsys)
    assert code == 0 and "  usagg validate ./-dash/demo.yaml\n" in text and "  usagg run ./-dash/demo.yaml\n" in text
    code, text = run_cli(["init", "first"], monkeypatch, capsys)
    assert code == 0 and "warning" not in text
    other = small_study("demo")  # runs/demo: a study 'demo' of another plan, run from another spec file still there
    store = RunStore(tmp_path / "runs" / "demo")
    store.init("name: demo\n", plan(other))
    (tmp_path / "shipped.yaml").write_text("name: demo\n")
    store.add_spec_file((tmp_path / "shipped.yaml").resolve())
    code, text = run_cli(["init", "demo"], monkeypatch, capsys)
    said = " ".join(text.split())
    assert code == 0 and "warning" not in said and load_study(tmp_path / "demo" / "demo.yaml").name == "demo_2"
    assert (
        "note: 'demo' is taken (the run store runs/demo holds a study of that name, run from shipped.yaml), so the "
        "study is named 'demo_2'; edit `name:` in demo/demo.yaml to choose another"
    ) in said
    assert "  usagg run demo/demo.yaml\n" in text and "  usagg status runs/demo_2\n" in text


def test_a_folder_name_with_nothing_to_keep_gives_a_named_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "--from", "known", "+++"], monkeypatch, capsys)
    assert code == 0 and "wrote +++/known.yaml: the study 'my_known'" in text, text
    assert "note: nothing of the folder's name '+++' can name a study" in " ".join(text.split())
    assert load_study(tmp_path / "+++" / "known.yaml").name == "my_known" and "  usagg status runs/my_known\n" in text


def test_init_help_has_an_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["init", "--help"], monkeypatch, capsys)
    assert code == 0 and "usagg init --from fmc_uia fmc" in text


# A tiny version of the demo: two tasks, eight images each, one epoch of TS (seconds on a CPU), one job at a
# time in the run's own process (no worker processes to start).
TINY = [
    "--paradigm",
    "TS",
    "--set",
    "execution.cpu_jobs=1",
    "--set",
    "training.epochs=1",
    "--set",
    "data.synthetic.sizes={}",
    "--set",
    "data.synthetic.default_size=8",
    "--set",
    "data.synthetic.val_size=4",
    "--set",
    "tasks_from.include=[fetal_head,thyroid_nodule_det]",
    "--set",
    "analysis.representative_tasks=[fetal_head]",
]


@pytest.mark.slow
@pytest.mark.parametrize("devices", ["cpu", pytest.param("0", marks=pytest.mark.cuda)])
def test_the_written_demo_trains_outside_the_repo(
    devices: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usagg init` then `usagg run` from a folder outside the repo: the run store fills with done jobs."""
    env = {**os.environ, "COLUMNS": "200"}
    usagg = [sys.executable, "-m", "usagg"]
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "d"], monkeypatch, capsys)  # in-process; the run is the separate process
    assert code == 0, text
    ran = subprocess.run(
        [*usagg, "run", "d/demo.yaml", "--devices", devices, *TINY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with (tmp_path / "runs" / "d" / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["paradigm"], r["task"]) for r in rows} == {("TS", "fetal_head"), ("TS", "thyroid_nodule_det")}
    assert {r["metric"] for r in rows} >= {"DSC", "IoU"}

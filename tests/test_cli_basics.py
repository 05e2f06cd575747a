"""The CLI surface of the spec and planner: help, version, validate, plan (table, JSON, states), schema."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cli_run
import pytest

from usagg.spec.load import dump_study, load_study

REPO = Path(__file__).resolve().parents[1]
FMC = REPO / "studies" / "fmc_uia.yaml"


def run_cli(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return cli_run.run_cli(args, monkeypatch, capsys, columns=200)


def test_import_and_help_stay_light() -> None:
    """`import usagg.cli.app` loads no torch, matplotlib or scipy, and `usagg --help` answers."""
    probe = (
        "import sys, usagg.cli.app\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'scipy', 'timm', 'sklearn') if m in sys.modules]\n"
        "print(','.join(heavy) or 'none')\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none"
    proc = subprocess.run([sys.executable, "-m", "usagg", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("validate", "plan", "schema"):
        assert command in proc.stdout


@pytest.mark.parametrize("check", [[], ["--no-data-check"]], ids=["data check", "no data check"])
def test_validating_a_synthetic_study_renders_nothing_and_imports_no_scipy(check: list[str], tmp_path: Path) -> None:
    """The synthetic benchmark's task list and settings are usagg/data/synth/manifest.py's: validating the demo
    imported generate.py, and with it the B-mode renderer and scipy (0.45 s), to read them."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['usagg', 'validate', *{check!r}, {str(REPO / 'studies' / 'demo.yaml')!r}]\n"
        "try:\n    runpy.run_module('usagg', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
        "heavy = ('scipy', 'torch', 'usagg.data.synth.generate', 'usagg.data.synth.bmode', 'usagg.data.synth.sample')\n"
        "print('loaded:', ','.join(m for m in heavy if m in sys.modules) or 'none', 'exit:', code)\n"
    )
    env = {**os.environ, "USAGG_CACHE": str(tmp_path / "cache")}  # no benchmark generated there: nothing to check
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "loaded: none exit: 0", proc.stdout


def test_version(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from usagg import __version__

    code, text = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and text.strip() == f"usagg {__version__}"


@pytest.mark.parametrize("command", ["validate", "plan", "schema"])
def test_help_has_an_example(command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli([command, "--help"], monkeypatch, capsys)
    assert code == 0
    assert f"Example: usagg {command}" in text


def _commands() -> list[list[str]]:
    """Every command and command group of the app, as the words that name it (`["data", "check"]`)."""
    import click
    import typer

    from usagg.cli.app import app

    def walk(cmd: click.Command, path: list[str], ctx: click.Context) -> list[list[str]]:
        found = [path] if path else []
        if hasattr(cmd, "list_commands"):  # a group (typer's own group class, whichever click it builds on)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                found += walk(sub, [*path, name], click.Context(sub, parent=ctx))
        return found

    root = typer.main.get_command(app)
    return walk(root, [], click.Context(root))


@pytest.mark.parametrize("words", _commands(), ids=" ".join)
def test_every_command_and_group_help_has_an_example(
    words: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli([*words, "--help"], monkeypatch, capsys)
    assert code == 0 and re.search(rf"Examples?:\s+usagg {' '.join(words)}\b", text), text


def test_data_catalog_help_has_an_example(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["data", "catalog", "--help"], monkeypatch, capsys)
    assert code == 0 and "Example: usagg data catalog" in text and "--groups" in text and "--force" in text


def test_validate_summary(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["validate", str(FMC)], monkeypatch, capsys)
    assert code == 0, text
    assert "valid study fmc_uia" in text
    assert "tasks: 27 (3 regression, 9 classification, 3 detection, 12 segmentation)" in text
    assert "OB 12, Breast 3" in text
    assert "jobs: 111 (TS 81, CG 27, AU 3)" in text
    assert "does not exist yet" in text  # the placeholder data root is a note, not an error


def test_validate_with_set(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(
        ["validate", str(FMC), "--set", "seeds=[0]", "--set", "paradigms=[CG]", "--set", "singleton_groups=skip"],
        monkeypatch,
        capsys,
    )
    assert code == 0, text
    assert "jobs: 6 (CG 6)" in text  # 9 clinical groups, 3 of them single-task


def test_plan_json_fmc_uia(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["plan", str(FMC), "--json", "--set", "fractions=[0.5, 1.0]"], monkeypatch, capsys)
    assert code == 0
    jobs = json.loads(text)
    study = load_study(FMC)
    groups = {t.group for t in study.tasks}
    assert len(groups) == 9
    per = Counter(j["paradigm"] for j in jobs)
    assert per == {"TS": 27 * 3 * 2, "CG": 9 * 3 * 2, "AU": 1 * 3 * 2}
    for seed in (0, 1, 2):
        for fraction in (0.5, 1.0):
            these = [j for j in jobs if j["seed"] == seed and j["fraction"] == fraction]
            assert sorted(j["name"] for j in these if j["paradigm"] == "TS") == sorted(t.id for t in study.tasks)
            assert sorted(j["name"] for j in these if j["paradigm"] == "CG") == sorted(groups)
            assert [len(j["tasks"]) for j in these if j["paradigm"] == "AU"] == [27]
    assert all(j["state"] == "pending" for j in jobs)  # as `run --dry-run` says
    assert all(j["moe"] == (j["paradigm"] != "TS") for j in jobs)
    assert len({j["id"] for j in jobs}) == len(jobs)


def test_plan_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["plan", str(FMC), "--set", "seeds=[0]"], monkeypatch, capsys)
    assert code == 0
    assert "fmc_uia: 37 jobs" in text
    assert "CG-Breast-f1-s0-" in text and "27 tasks" in text


def test_plan_shows_run_store_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from usagg.plan import plan
    from usagg.store import RunStore

    monkeypatch.chdir(tmp_path)
    overrides = ["seeds=[0]", "paradigms=[TS]", "tasks_from.include=[FUGC, IUGC, lung]"]
    study = load_study(FMC, overrides)
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "fmc_uia")
    store.init(dump_study(study), jobs[:2])
    store.set_state(jobs[0].id, "running")
    store.set_state(jobs[0].id, "done")
    args = ["plan", str(FMC), "--json"] + [a for o in overrides for a in ("--set", o)]
    code, text = run_cli(args, monkeypatch, capsys)
    assert code == 0
    assert [j["state"] for j in json.loads(text)] == ["done", "pending", "pending"]


def test_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run_cli(["schema"], monkeypatch, capsys)
    assert code == 0
    schema = json.loads(text)
    assert schema["title"] == "Study" and "TaskSpec" in schema["$defs"]
    out = tmp_path / "s.json"
    code, _ = run_cli(["schema", "--out", str(out)], monkeypatch, capsys)
    assert code == 0 and json.loads(out.read_text()) == schema


def test_help_follows_cli_conventions(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """-h works everywhere, completion can be installed, and help never shows Python types (issue 14.7)."""
    code, text = run_cli(["-h"], monkeypatch, capsys)
    assert code == 0 and "--install-completion" in text and "--version" in text
    commands = [["run"], ["status"], ["plan"], ["validate"], ["data", "check"], ["compare"], ["report"], ["synth"]]
    for command in commands:
        code, text = run_cli([*command, "-h"], monkeypatch, capsys)
        assert code == 0, command
        for python_type in ("<bool>", "<str>", "<list[", "<int>", "<path>", "<float"):
            assert python_type not in text, (command, python_type)
    code, text = run_cli(["data", "check", "-h"], monkeypatch, capsys)
    assert "--json " in text and "error|warn|off" in text and "FLOAT" in text


def test_help_works_with_a_typer_that_has_no_annotation_labels() -> None:
    """typer before the annotation labels (0.27 on a GPU image, 2026-11-28) has no `display_type_rich`: the
    relabelling leaves such parameters alone instead of crashing `usagg` at start."""
    import click

    from usagg.cli.app import plain_help

    command = click.Command("x", params=[click.Option(["--n"], type=int)])
    assert not hasattr(command.params[0], "display_type_rich")
    assert plain_help(command) is command
    assert "--n INTEGER" in command.get_help(click.Context(command))


@pytest.mark.parametrize("columns", [80, 60])
def test_plan_never_cuts_at_the_width_of_a_log(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Ids fold onto the next line, states stay whole (issue 14.2): the table yields room, never a cut word."""
    from usagg.plan import plan

    monkeypatch.chdir(tmp_path)  # no run store of the demo here: every job pending, AG waiting

    demo = REPO / "studies" / "demo.yaml"
    jobs = plan(load_study(demo))
    code, text = cli_run.run_cli(["plan", str(demo)], monkeypatch, capsys, columns=columns)
    assert code == 0 and text.count(" pending") == len(jobs) and text.count(" waiting") == 2  # the title and AG's row
    first_column = "".join(line[2:].split(" ")[0] for line in text.splitlines()[4:] if line.strip())
    for job in jobs:
        assert job.id in first_column


def test_an_output_that_cannot_be_written_is_one_paragraph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.7: an impossible output path names the path and the cause, exit 2, no traceback."""
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    for out in (Path("/dev/null/x.md"), a_file / "plan.json"):
        code, text = run_cli(["schema", "--out", str(out)], monkeypatch, capsys)
        assert code == 2 and text.startswith("error: could not use") and "Traceback" not in text, text
        assert "a file where a folder is needed" in text
    assert a_file.read_text() == "mine\n"


def test_a_missing_data_root_says_where_a_relative_one_is_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new user's audit: `data: {root: syn}` in proj/real.yaml with syn/ beside proj/ read "data.root
    .../proj/syn does not exist" (run, --dry-run) with no word that a relative path is from the spec's folder."""
    (tmp_path / "syn").mkdir()
    spec = tmp_path / "proj" / "real.yaml"
    spec.parent.mkdir()
    spec.write_text(
        "name: real\ndata: {root: syn}\nmodel: {backbone: dinov3_test, image_size: 32}\n"
        "tasks: [{id: a, type: classification, num_classes: 2, group: g}]\n"
    )
    monkeypatch.chdir(tmp_path)
    hint = "(A relative data.root is taken from the spec file's folder, or from the current folder where --set"
    for args in (["run", str(spec), "--dry-run"], ["run", str(spec)]):
        code, out = run_cli(args, monkeypatch, capsys)
        said = " ".join(out.split())
        assert code == 2 and f"data.root {tmp_path / 'proj' / 'syn'} does not exist" in said and hint in said, out
    code, out = run_cli(["validate", str(spec)], monkeypatch, capsys)
    assert code == 0 and hint in " ".join(out.split()), out
    assert not (tmp_path / "runs").exists()

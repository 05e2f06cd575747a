"""What a new user's first commands met: a paradigm in another case, a study folder given as a run store, a file as
output_root, a union's `(set by --set)` note, the API's error classes, and the comments `usagg init` writes."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from usagg.analysis.simulate import load_tasks, simulate_run_store

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tests" / "data" / "fmc_uia_tasks.yaml"
DEMO = REPO / "studies" / "demo.yaml"


@pytest.fixture
def study_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """`usagg init my_study` run in an empty folder (the current one)."""
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "my_study"], monkeypatch, capsys)
    assert code == 0, text
    return tmp_path / "my_study"


def test_a_baseline_in_another_case_is_pointed_to_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in {"FUGC", "breast_2cls"}]
    store = simulate_run_store(tmp_path / "runs" / "two", tasks)
    code, text = run_cli(["compare", str(store), "--baseline", "ts"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text
    assert "baseline 'ts' has no results in " in text and "(did you mean 'TS'?); paradigms present: TS" in text
    code, text = run_cli(["compare", str(store), "--baseline", "XX"], monkeypatch, capsys)
    assert code == 2 and "did you mean" not in text and "paradigms present: TS" in text


def test_a_paradigm_in_another_case_is_pointed_to_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", str(DEMO), "--paradigm", "ag", "--dry-run", "--no-data-check"]
    code, text = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text
    assert "--paradigm ag (did you mean 'AG'?): this study plans AG, AU" in text


def test_status_of_a_study_folder_names_its_run_store(
    study_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["status", "my_study"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text
    assert (
        "error: my_study is a study folder, not a run store: it holds the spec my_study/demo.yaml, whose run store "
        "is runs/my_study, not there yet: `usagg run my_study/demo.yaml` makes it, then usagg status runs/my_study"
    ) in text
    code, text = run_cli(["status", "my_study/demo.yaml"], monkeypatch, capsys)
    assert code == 2 and "my_study/demo.yaml is a study spec, not a run store: its run store is runs/my_study" in text
    code, text = run_cli(["compare", "my_study"], monkeypatch, capsys)  # every RUN_DIR, not only status's
    assert code == 2 and "then usagg compare runs/my_study" in text
    (Path("runs") / "my_study").mkdir(parents=True)
    (Path("runs") / "my_study" / "plan.json").write_text("[]")
    code, text = run_cli(["status", "my_study"], monkeypatch, capsys)
    assert code == 2
    assert "whose run store is runs/my_study: usagg status runs/my_study" in text and "not there yet" not in text


def test_status_of_a_folder_without_specs_says_there_is_no_run_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    (Path("empty") / "notes.yaml").write_text("just: notes\n")
    code, text = run_cli(["status", "empty"], monkeypatch, capsys)
    assert code == 2 and "no run store at empty (no plan.json): run `usagg run STUDY` first" in text
    runs = Path("empty") / ".runs"  # a `usagg run` starting there records itself a moment before plan.json (ops audit)
    runs.mkdir()
    record = {"host": socket.gethostname(), "pid": 1, "started": "2026-12-08T00:00:00+00:00", "token": "t"}
    (runs / f"{'a' * 32}.lock").write_text(json.dumps(record))  # pid 1 runs, its heartbeat fresh: a live run
    code, text = run_cli(["status", "empty"], monkeypatch, capsys)
    said = "(no plan.json yet: a `usagg run` starting there is writing it, look again in a moment): run"
    assert code == 2 and said in " ".join(text.split()), text


@pytest.mark.parametrize("root", ["README.md", "README.md/sub"])
def test_an_output_root_that_is_a_file_is_refused_before_the_run(
    root: str, study_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("README.md").write_text("a file\n")
    where = "README.md is a file" if root == "README.md" else "README.md, a parent of README.md/sub, is a file"
    for command in (["validate", "my_study/demo.yaml"], ["run", "my_study/demo.yaml"]):
        code, text = run_cli([*command, "--set", f"output_root={root}"], monkeypatch, capsys)
        assert code == 2 and "Traceback" not in text, text
        assert f"  - output_root: {where}; output_root is the folder holding the run stores" in text
        assert f"(set by --set output_root={root})" in text and "checking" not in text.lower()
    code, text = run_cli(["validate", "my_study/demo.yaml", "--set", "output_root=new/runs"], monkeypatch, capsys)
    assert code == 0 and "(run store new/runs/my_study)" in text


def test_a_set_note_is_said_once_for_a_union(
    study_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["validate", "my_study/demo.yaml", "--set", "execution.cpu_jobs=0"], monkeypatch, capsys)
    assert code == 2
    assert (
        "execution.cpu_jobs: got 0; input should be greater than or equal to 1, or input should be 'auto' "
        "(set by --set execution.cpu_jobs=0)\n"
    ) in text
    assert text.count("set by") == 1


def test_the_api_exports_the_errors_it_raises() -> None:
    import usagg.api
    from usagg.api import DataError, SpecError, UsaggError
    from usagg.errors import DataError as Data
    from usagg.errors import SpecError as Spec

    assert (SpecError, DataError) == (Spec, Data) and issubclass(SpecError, UsaggError)
    assert {"SpecError", "DataError", "UsaggError"} <= set(usagg.api.__all__)


@pytest.mark.parametrize(("source", "folder"), [("demo", "my_study"), ("demo", "x"), ("known", "a_much_longer_name")])
def test_init_keeps_the_header_comments_in_one_column(
    source: str, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["init", "--from", source, folder], monkeypatch, capsys)
    assert code == 0, text
    header = (tmp_path / folder / f"{source}.yaml").read_text().split("\n\n")[0].splitlines()
    commented = [line for line in header if re.match(r"^#\s+usagg .*\S {2,}# ", line)]
    assert len(commented) >= 2 and f"usagg run {folder}/{source}.yaml " in commented[0]
    columns = {line.index("# ", 1) for line in commented}
    assert len(columns) == 1, "\n".join(commented)
    shipped = (REPO / "usagg" / "studies" / f"{source}.yaml").read_text().splitlines()
    gap = min(line.index("# ", 1) - len(line[: line.index("# ", 1)].rstrip()) for line in commented)
    shipped_gap = min(
        line.index("# ", 1) - len(line[: line.index("# ", 1)].rstrip())
        for line in shipped
        if re.match(r"^#\s+usagg .*\S {2,}# ", line)
    )
    assert gap == shipped_gap  # as far right of the longest command as the packaged study has it

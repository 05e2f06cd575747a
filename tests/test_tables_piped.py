"""Issue 26.8: every table the CLI prints keeps its ids whole, each row on one line, when piped into a log.

Output captured by pytest is not a terminal, as in `usagg ... > log.txt` or a CI log: rich would lay each table
out at $COLUMNS (or 80) and fold a job or task id over several lines that no search finds. `print_table`
(usagg/cli/display.py) prints them at their natural width instead; these tests run each command that prints a
table in-process at COLUMNS=60 and 80 and look for every id, and a cell of its row, on one line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.cli_run import run_cli
from tests.tiny_study import write_tiny_study
from usagg.analysis.results import Row, write_results
from usagg.cachedir import KINDS
from usagg.filehash import file_sha256
from usagg.plan import plan
from usagg.spec.load import dump_study, load_study
from usagg.store import RunStore

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"
WIDTHS = pytest.mark.parametrize("columns", [60, 80])


def _on_one_line(text: str, rows: dict[str, str]) -> None:
    """Each id of `rows` whole on a line that also holds the cell given with it (its row is not folded)."""
    lines = text.splitlines()
    for ident, cell in rows.items():
        assert any(ident in line and cell in line for line in lines), f"{ident!r} with {cell!r} not on one line"


@WIDTHS
def test_plan_keeps_job_ids_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = load_study(DEMO)
    jobs = plan(study)
    assert max(len(j.id) for j in jobs) > 30  # ids that fold in a 60- or 80-column table
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["plan", str(DEMO)], monkeypatch, capsys, columns=columns)
    assert code == 0
    _on_one_line(out, {j.id: f" {j.paradigm} " for j in jobs})


@WIDTHS
def test_status_keeps_job_ids_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = load_study(DEMO)
    jobs = plan(study)
    store = RunStore(tmp_path / "runs" / "demo")
    store.init(dump_study(study), jobs)
    store.set_state(jobs[0].id, "running")  # no lock held: shown as interrupted
    code, out = run_cli(["status", str(store.root)], monkeypatch, capsys, columns=columns)
    assert code == 0 and f"{len(jobs) - 1} pending" in out
    _on_one_line(out, {j.id: "interrupted" if j is jobs[0] else "pending" for j in jobs})


@WIDTHS
def test_dry_run_keeps_job_ids_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    demo = Path(shutil.copy(DEMO, tmp_path / "demo.yaml"))  # a store of the repository's own (make demo) aside
    code, out = run_cli(["run", str(demo), "--dry-run", "--no-data-check"], monkeypatch, capsys, columns=columns)
    assert code == 0
    jobs = plan(load_study(demo))
    _on_one_line(out, {j.id: "pending" for j in jobs})
    au = next(j for j in jobs if j.paradigm == "AU")
    _on_one_line(out, {au.id: f" {len(au.task_ids)} tasks "})  # counted as `usagg plan` does: no 200-column rows
    assert max(len(line) for line in out.splitlines()) < 150
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@WIDTHS
def test_registry_keeps_names_whole_with_their_rows(
    columns: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(["registry", "--json"], monkeypatch, capsys)
    assert code == 0
    listed = json.loads(out)
    backbones = {row["backbone"]: row["timm model"] for row in listed["backbones"]}
    paradigms = {row["paradigm"]: row["description"] for row in listed["paradigms"]}
    assert "dinov3_small_plus" in backbones
    code, out = run_cli(["registry"], monkeypatch, capsys, columns=columns)
    assert code == 0
    _on_one_line(out, backbones)
    _on_one_line(out, paradigms)  # a description of 100 characters on its name's line


@WIDTHS
def test_cache_info_keeps_each_row_and_header_on_one_line(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a checkpoint, only bytes to digest")
    file_sha256(weights, cache_dir=tmp_path / "cache")  # one real filehash record
    two_days_ago = time.time() - 2 * 86400
    for record in (tmp_path / "cache" / "filehash").iterdir():
        os.utime(record, (two_days_ago, two_days_ago))
    code, out = run_cli(["cache", "info", "--cache-dir", str(tmp_path / "cache")], monkeypatch, capsys, columns=columns)
    assert code == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    assert [row[:2] for row in rows[: len(KINDS)]] == [[kind, str(int(kind == "filehash"))] for kind in KINDS]
    assert rows[KINDS.index("filehash")][3:] == ["2.0 d ago", "2.0 d ago"]
    header = [cell.strip() for cell in next(line for line in out.splitlines() if "┃" in line).split("┃")[1:-1]]
    assert header == ["kind", "entries", "disk use", "least recently used", "most recently used"]
    assert (
        "disk use: what deleting the entries frees (whole blocks, as `du` counts; not their bytes)" in out.splitlines()
    )


@pytest.mark.parametrize("columns", [40, 60, 80])  # its table is narrow: 40 columns fold it
def test_synth_keeps_task_ids_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = {"fetal_head_biometry": "Fetal", "thyroid_nodule_det": "Thyroid"}
    args = ["synth", str(tmp_path / "synth"), "--image-size", "32", "--default-size", "4", "--val-size", "2"]
    code, out = run_cli([*args, *(a for t in tasks for a in ("--task", t))], monkeypatch, capsys, columns=columns)
    assert code == 0 and "ok" in out
    _on_one_line(out, tasks)


def _results(path: Path, tasks: list[str]) -> None:
    """A results.csv of 12 tasks: AU helps the small ones, CG the large ones (as tests/test_advise.py designs)."""
    rows = []
    for i, task in enumerate(tasks):
        x = i / 5  # log10 n_train - 2
        deltas = {"TS": 0.0, "CG": -16 + 10 * x, "AU": 12 - 10 * x}
        for p, delta in deltas.items():
            for seed, wobble in ((0, 1.01), (1, 0.99)):
                job = {"TS": task, "CG": f"G{i // 4}"}.get(p, "all")
                value = 0.6 * (1 + delta / 100) * wobble
                rows.append(
                    Row("long", f"{p}-{job}-f1-s{seed}", p, f"G{i // 4}", seed, 1.0, task, "classification", "AUC",
                        value, True, 10 ** (2 + x))
                )  # fmt: skip
    write_results(rows, path)


@WIDTHS
def test_advise_keeps_task_ids_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks = [f"fetal_head_circumference_plane_{i:02d}" for i in range(12)]
    _results(tmp_path / "results.csv", tasks)
    code, out = run_cli(["advise", "--results", str(tmp_path / "results.csv")], monkeypatch, capsys, columns=columns)
    assert code == 0, out
    lines = [line for line in out.splitlines() if line.lstrip().startswith(tuple(tasks))]  # the rows, not the notes
    assert [
        next(t for t in tasks if line.lstrip().startswith(t)) for line in lines
    ] == tasks  # each id whole, once, in order
    assert all(line.split()[2].rstrip("*") in ("TS", "CG", "AU") for line in lines)  # its advice on its line


@pytest.mark.slow  # trains two one-step jobs
def test_the_summary_of_a_run_keeps_job_ids_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = write_tiny_study(
        tmp_path / "tiny.yaml",
        "tiny-piped",
        tmp_path / "data",
        synthetic={"default_size": 8, "val_size": 4},
        training={"batch_size": 4, "eval_batch_size": 8},
        execution={"devices": "cpu", "cpu_jobs": 1},
    )
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["run", str(study)], monkeypatch, capsys, columns=60)
    assert code == 0, out
    summary = out[out.index("┃ job") :]  # the table after the run, not the progress lines that name the jobs too
    _on_one_line(summary, {j.id: "done" for j in plan(load_study(study))})


@pytest.mark.slow  # `usagg` subprocesses, about a second each
@pytest.mark.parametrize("args", [["validate", str(DEMO)], ["plan", str(DEMO)], ["registry"]])
def test_a_reader_that_stops_early_ends_the_command_with_exit_0(args: list[str]) -> None:
    """`usagg status | head -1`: the reader closes its end before the command has printed everything. Every command
    then ends as `compare` does, exit 0 and no broken-pipe message (rich's own choice is exit 1, which a
    `set -o pipefail` script takes for a failure). Here the reader closes before the first byte, so it never wins
    the race by reading everything first."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "usagg", *args], stdout=write, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr and b"BrokenPipe" not in done.stderr


@WIDTHS
def test_validate_keeps_each_line_whole(
    columns: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate's sentences are lines of a log too: the jobs line and AG's waiting line stay whole."""
    monkeypatch.chdir(tmp_path)
    code, out = run_cli(["validate", str(DEMO), "--no-data-check"], monkeypatch, capsys, columns=columns)
    assert code == 0
    jobs = next(line for line in out.splitlines() if line.startswith("jobs: "))
    assert jobs.endswith("= units x 1 fraction x 1 seed") and len(jobs) > columns
    waiting = next(line for line in out.splitlines() if line.startswith("AG: planned once"))
    assert waiting.endswith("results)")


def test_advise_fits_an_80_column_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal of 80 columns the advice table keeps every value whole: no '…' (the From and Expected Δ columns
    pushed LOGO and Best past the edge); measured advice is marked '*' in its own cell."""
    tasks = [f"task_{i:02d}" for i in range(12)]
    _results(tmp_path / "results.csv", tasks)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich lays out for a terminal
    code, out = run_cli(["advise", "--results", str(tmp_path / "results.csv")], monkeypatch, capsys, columns=80)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    rows = [line for line in plain.splitlines() if line.lstrip().startswith(tuple(tasks))]
    assert code == 0 and len(rows) == 12 and "…" not in plain
    assert all(len(line) <= 80 for line in rows) and any(line.split()[2].endswith("*") for line in rows)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(-0.0, "+0.0"), (0.0, "+0.0"), (-0.011, "-0.011"), (0.04, "+0.040"), (3e-05, "+0.000030"), (1.26, "+1.3")],
)
def test_an_intervals_end_never_hides_its_side_of_zero(value: float, shown: str) -> None:
    """'-0.0' for an end of -0.011 read as touching 0 (the demo's AUD lower end); '+3e-05' is no number a table
    reader compares at a glance."""
    from usagg.analysis.tables import ci_end

    assert ci_end(value) == shown

"""On a terminal narrower than a table, its ids fold and its text keeps its items whole (`print_table`).

The audit's case: `usagg run`'s closing job table (and `usagg status`) on an 80-column terminal kept each job id
whole and gave the metrics what was left, 18 columns, which cut `thyroid_malignancy` from its `: AUC 0.4`.
Piped tables keep their natural width instead (tests/test_tables_piped.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from usagg.cli.display import print_table
from usagg.cli.runs import _summary_table
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.store import RunStore

DEMO = Path(__file__).resolve().parents[1] / "studies" / "demo.yaml"
ERROR = "DataError: the image at train/x.png could not be read because the file is empty (0 bytes)"


def _done(store: RunStore, job: Job, device: str | None = None) -> list[str]:
    """The job done with a primary metric per task (on `device` where given); the items its row shows."""
    tasks = {
        t.id: {"type": t.type, "primary": t.metric, "metrics": {t.metric: 0.40625}, "n_train": 8, "n_test": 4}
        for t in job.tasks
    }
    store.set_state(job.id, "running")
    if device:
        store.note_device(job.id, device)
    store.write_metrics(job.id, {"job_id": job.id, "tasks": tasks, "history": []})
    store.set_state(job.id, "done")
    return [f"{t.id}: {t.metric} 0.4062" for t in job.tasks][:4]


def _table_text(tmp_path: Path, width: int, device: str | None = None) -> tuple[str, list[Job], list[str]]:
    """The closing table of a demo store (three done jobs, one failed), printed on a terminal `width` wide."""
    jobs = plan(load_study(DEMO))
    store = RunStore(tmp_path / "runs" / "demo")
    store.init("name: demo\n", jobs)
    by_id = {j.id.rsplit("-", 3)[0]: j for j in jobs}
    shown = [by_id["TS-thyroid_malignancy"], by_id["TS-fetal_head_biometry"], by_id["AU-all"], by_id["CG-Fetal"]]
    items = [item for job in shown[:3] for item in _done(store, job, device)]
    store.set_state(shown[3].id, "running")
    store.set_state(shown[3].id, "failed", error=ERROR)
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    print_table(console, _summary_table(store, [j.id for j in shown], "demo"), fold_ids=True)
    return buf.getvalue(), shown, items


def _first_column(text: str) -> str:
    """The table's first column, its folded lines joined."""
    return "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))


@pytest.mark.parametrize(
    ("width", "device"), [(60, None), (80, None), (60, "cuda:1 (NVIDIA H100 80GB HBM3)"), (80, "cpu (2 threads)")]
)
def test_a_narrow_terminal_folds_the_ids_and_keeps_each_metric_whole(
    tmp_path: Path, width: int, device: str | None
) -> None:
    """A job's device shows under its state, without the card's name: no column of its own to narrow the rest."""
    text, jobs, items = _table_text(tmp_path, width, device)
    assert "H100" not in text and "threads" not in text and "device" not in text
    if device:
        assert f"│ {device.split(' (')[0]} " in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "thyroid_malignancy: AUC 0.4062" in items and len(items) == 6
    # 'task: AUC 0.4062' on one line at 80 columns; at 60 no room for the longest: folded at its words, never cut
    wholes = items if width == 80 else [word for item in items for word in item.split()]
    for whole in [*wholes, *ERROR.split()]:
        assert any(whole in line for line in lines), f"{whole!r} is cut:\n{text}"
    ids = _first_column(text)
    assert all(job.id in ids for job in jobs), text  # an id may fold; all of it is there


def test_a_wide_terminal_keeps_each_row_on_one_line(tmp_path: Path) -> None:
    text, jobs, items = _table_text(tmp_path, 200)
    lines = text.splitlines()
    assert all(any(job.id in line for line in lines) for job in jobs)
    assert any(ERROR in line for line in lines) and all(any(item in line for line in lines) for item in items)

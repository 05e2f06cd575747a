"""The jobs' selection warnings (metrics.json `selection.warnings`, once only in each job's log) reach compare and
the report: one row per task and cause with the jobs and paradigms that warned, and a line in the report's summary."""

from __future__ import annotations

from pathlib import Path

from usagg.analysis.inputs import load_input
from usagg.analysis.report import write_report
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import all_tables, analyse, compare_output
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
SMALL = "12 selection images (< 20) cannot rank epochs reliably; raise data.selection_fraction"


def test_selection_warnings_are_tabled_per_task_and_cause_and_named_in_the_summary(tmp_path: Path) -> None:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in ("breast_lesion", "breast_2cls", "lung", "lung_2cls")]
    run = simulate_run_store(tmp_path / "sim", tasks, paradigms=("TS", "AU"), seeds=(0,))
    store = RunStore(run)
    warned = {}
    for job in store.job_folders():
        m = store.metrics(job)
        if job.startswith("TS-breast_lesion") or job.startswith("AU-"):
            task_ids = ["breast_lesion"] + (["lung_2cls"] if job.startswith("AU-") else [])
            w = [f"task {t}: {SMALL}" for t in task_ids]
            if job.startswith("AU-"):
                w.append("task lung_2cls: the selection split has no image of class [1]")
            m["selection"] = {"mode": "best", "warnings": w}
            store.write_metrics(job, m)
            warned[job] = w
        elif job.startswith("TS-lung-"):  # an older usagg's warning without a selection split: no epoch ranked
            m["selection"] = {"mode": "last", "warnings": [f"task lung: {SMALL.replace('12', '0', 1)}"]}
            store.write_metrics(job, m)
    store.mark_results_fresh()
    inp = load_input(run, None)
    assert inp.selection_warnings == {j: tuple(w) for j, w in warned.items()}
    a = analyse(inp)
    (table,) = [t for t in all_tables(a) if t.name == "selection_warnings"]
    assert table.rows == [  # the study's task order, then the cause
        ["lung_2cls", SMALL, 1, "AU"],
        ["lung_2cls", "the selection split has no image of class [1]", 1, "AU"],
        ["breast_lesion", SMALL, 2, "AU, TS"],
    ]
    assert "Warnings of the jobs' model selection" in compare_output(a, "table")
    write_report(a, tmp_path / "rep", render=lambda *_: [])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "- **Selection warnings**: 2 jobs warned that the selection split of lung_2cls, breast_lesion cannot rank "
        "epochs reliably (causes: Study, warnings of the jobs' model selection)." in md
    )
    assert md.index("### Warnings of the jobs' model selection") < md.index("## Per-task results")


def test_a_study_whose_jobs_did_not_warn_has_no_such_table(tmp_path: Path) -> None:
    tasks = [t for t in load_tasks(TASKS) if t["id"] in ("breast_lesion", "lung")]
    a = analyse(load_input(simulate_run_store(tmp_path / "sim", tasks, paradigms=("TS", "AU"), seeds=(0,)), None))
    assert a.inp.selection_warnings == {} and "selection_warnings" not in [t.name for t in all_tables(a)]

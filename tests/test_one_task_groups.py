"""Each paradigm's one-task groups are its own (CG: clinical groups; AG: the groups AG formed; AU: none), and every
text that names them (the summary, the exclusion notes of compare and the report, Figure 3) names exactly the tasks
that paradigm's aggregates and tests left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from usagg.analysis.delta import aggregates, compare
from usagg.analysis.figure_delta import fig_delta
from usagg.analysis.inputs import load_input
from usagg.analysis.results import Row, write_results
from usagg.analysis.style import paper_style
from usagg.analysis.summary import Analysis, analyse, compare_output, summary_table
from usagg.analysis.tables import exclusion_notes

#: task -> clinical group: head_a and head_b share Fetal, lesion is alone in Breast
CLINICAL = {"head_a": "Fetal", "head_b": "Fetal", "lesion": "Breast"}
#: the groups AG formed (job names as usagg/plan.py names them): head_a alone in g1, lesion with head_b in g2
AG_GROUPS = {"head_a": "g1", "head_b": "g2", "lesion": "g2"}


def _table(tmp_path: Path) -> Path:
    """TS, CG, AU and AG on three tasks, two seeds; every paradigm +10 % on every task but the one-task groups,
    whose Δ is -50 % under the paradigm that trained them alone."""
    rows = []
    for seed in (0, 1):
        for task, group in CLINICAL.items():
            job = {"TS": task, "CG": group, "AU": "all", "AG": AG_GROUPS[task]}
            for p, name in job.items():
                alone = (p == "CG" and task == "lesion") or (p == "AG" and task == "head_a")
                value = (0.5 if p == "TS" else 0.25 if alone else 0.55) + 0.01 * seed
                jid = f"{p}-{name}-f1-s{seed}-0123abcd"
                rows.append(Row("s", jid, p, group, seed, 1.0, task, "segmentation", "DSC", value, True, 800.0))
    path = tmp_path / "results.csv"
    write_results(rows, path)
    return path


@pytest.fixture(scope="module")
def analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    return analyse(load_input(None, _table(tmp_path_factory.mktemp("lone"))))


def test_each_paradigm_leaves_out_its_own_one_task_groups(analysis: Analysis) -> None:
    comp = analysis.comp
    assert comp.excluded == {"CG": ("lesion",), "AG": ("head_a",)}  # AU trains every task together: none
    assert [o.text("CG") for o in comp.one_task_groups["CG"]] == ["lesion (clinical group Breast)"]
    assert [o.text("AG") for o in comp.one_task_groups["AG"]] == ["head_a (AG group g1)"]
    groups = {a.name: a for a in aggregates(comp, 1.0, "AG", "group")}
    assert groups["Breast"].tasks == ("lesion",) and groups["Breast"].mean == pytest.approx(10.0, abs=1)
    assert groups["Fetal"].tasks == ("head_b",) and groups["Fetal"].excluded == ("head_a",)
    cg = {a.name: a for a in aggregates(comp, 1.0, "CG", "group")}
    assert cg["Breast"].tasks == () and cg["Breast"].excluded == ("lesion",) and cg["Fetal"].n == 2


def test_the_summary_names_per_paradigm_what_its_aggregates_left_out(analysis: Analysis) -> None:
    row = dict(map(tuple, summary_table(analysis).rows))["One-task groups"]
    assert row == (
        "CG: lesion (clinical group Breast); AG: head_a (AG group g1); each left out of that paradigm's aggregates "
        "and tests (analysis.cg_singletons: exclude)"
    )
    assert "Fetal (head_a)" not in compare_output(analysis, "markdown")


def test_the_exclusion_notes_name_the_group_the_task_was_alone_in(analysis: Analysis) -> None:
    cg, ag = exclusion_notes(analysis.comp)[:2]
    assert cg.startswith(
        "CG: 1 task alone in its clinical group left out of every CG aggregate and test "
        "(lesion (clinical group Breast)):"
    )
    assert ag.startswith(
        "AG: 1 task alone in its AG group left out of every AG aggregate and test (head_a (AG group g1)):"
    )
    text = compare_output(analysis, "markdown")
    assert "alone in its AG group" in text and "AG: 1 task alone in its clinical group" not in text


def test_figure_3_marks_each_paradigms_one_task_groups_and_says_which(analysis: Analysis) -> None:
    with paper_style():
        fig, caption = fig_delta(analysis)
        labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(lab.split(" ")[0] for lab in labels if "†" in lab) == ["head_a", "lesion"]
    assert (
        "†: alone in its group under the paradigm named (CG: lesion (clinical group Breast); AG: head_a (AG group "
        "g1)); pale bar: that paradigm's Δ measures MoE alone" in caption
    )
    assert "alone in its clinical group" not in caption


def test_a_table_without_jobs_takes_the_clinical_groups_and_says_so(tmp_path: Path) -> None:
    rows = [
        Row("s", "", p, group, 0, 1.0, task, "segmentation", "DSC", 0.5, True, 800.0)
        for task, group in CLINICAL.items()
        for p in ("TS", "CG", "AG")
    ]
    write_results(rows, tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    assert comp.excluded == {"CG": ("lesion",), "AG": ("lesion",)}
    assert comp.excluded_text() == "CG: lesion (clinical group Breast); AG: lesion (clinical group Breast)"


def test_include_keeps_them_and_the_summary_says_so(tmp_path: Path) -> None:
    import yaml

    store = tmp_path / "store"
    store.mkdir()
    (store / "study.yaml").write_text(yaml.safe_dump({"name": "s", "analysis": {"cg_singletons": "include"}}))
    (store / "results.csv").write_bytes(_table(tmp_path).read_bytes())
    a = Analysis(load_input(store, None), compare(load_input(store, None)), [])
    assert a.comp.excluded == {} and set(a.comp.one_task_groups) == {"CG", "AG"}
    row = dict(map(tuple, summary_table(a).rows))["One-task groups"]
    assert row.endswith("every paradigm's aggregates and tests keep them (analysis.cg_singletons: include)")
    assert row.startswith("CG: lesion (clinical group Breast); AG: head_a (AG group g1)")

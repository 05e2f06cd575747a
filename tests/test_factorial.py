"""The 2x2 designs of aggregation and MoE (issue 25.2): CGD, main effects and interaction by hand, intervals,
what a study without a control says, compare's text/json/csv, the report's table and figure."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.cli_run import run_cli
from usagg.analysis.cluster_inference import wild_cluster_mean
from usagg.analysis.controls import control_of
from usagg.analysis.delta import compare
from usagg.analysis.factorial import designs, effect_stats, headline, missing_notes, stat_name, task_effects
from usagg.analysis.figure_split import fig_factorial
from usagg.analysis.inputs import load_input
from usagg.analysis.render import to_text
from usagg.analysis.results import Row, read_results, write_results
from usagg.analysis.stats import Stat
from usagg.analysis.summary import all_tables, analyse
from usagg.analysis.tables import factorial_table
from usagg.paradigms import PARADIGMS
from usagg.plan import plan_stages
from usagg.spec.load import study_from_mapping

REPO = Path(__file__).resolve().parent.parent
# factor levels: scope (task / group / all) and MoE; per task: TS, TSM, AUD, AU, CGD, CG as multiples of TS
RATIOS = {"TS": 1.0, "TSM": 1.1, "AUD": 1.2, "AU": 1.5, "CGD": 1.05, "CG": 1.2}
# baselines low enough that 1.5 x TS stays a DSC (the results reader refuses a value its metric cannot take)
TASKS = {"a": ("G1", 0.3), "b": ("G1", 0.36), "c": ("G2", 0.24), "d": ("G2", 0.42), "e": ("G3", 0.3), "f": ("G3", 0.33),
         "g": ("G4", 0.27), "h": ("G4", 0.39)}  # fmt: skip


def _table(tmp_path: Path, paradigms: tuple[str, ...] = tuple(RATIOS), jitter: float = 0.0) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for p in paradigms:
        for t, (g, base) in TASKS.items():
            v = base * RATIOS[p] * (1 + (jitter * rng.normal() if p != "TS" else 0.0))
            job = f"{p}-{g}" if PARADIGMS[p].scope == "group" else (f"{p}-all" if PARADIGMS[p].scope == "all" else t)
            rows.append(Row("s", job, p, g, 0, 1.0, t, "segmentation", "DSC", v, True, 100.0))
    write_results(rows, tmp_path / "r.csv")
    return tmp_path / "r.csv"


def test_cgd_is_cg_without_moe_and_the_demo_plans_it(tmp_path: Path) -> None:
    e = PARADIGMS["CGD"]
    assert (e.scope, e.moe, e.control) == ("group", False, True)
    raw = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    raw.pop("expect", None)
    assert "CGD" in raw["paradigms"]
    assert (REPO / "studies" / "demo.yaml").read_bytes() == (REPO / "usagg" / "studies" / "demo.yaml").read_bytes()
    study = study_from_mapping(raw, tmp_path / "demo.yaml")
    jobs = plan_stages(study, lambda jobs: None).jobs
    cgd = {j.name: j for j in jobs if j.paradigm == "CGD"}
    cg = {j.name: j for j in jobs if j.paradigm == "CG"}
    assert set(cgd) == set(cg) == {"Fetal", "Thyroid", "Breast", "Cardiac"}
    assert all(not j.moe and cg[n].moe and j.tasks == cg[n].tasks for n, j in cgd.items())


def test_designs_pair_each_two_factor_paradigm_with_its_controls(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path)))
    got = [(d.paradigm, d.aggregation, d.moe, d.complete) for d in designs(comp)]
    assert got == [("CG", "CGD", "TSM", True), ("AU", "AUD", "TSM", True)]
    no_tsm = compare(load_input(None, _table(tmp_path, ("TS", "AUD", "AU", "CGD", "CG"))))
    assert [(d.paradigm, d.missing) for d in designs(no_tsm)] == [("CG", ("TSM",)), ("AU", ("TSM",))]
    no_cgd = compare(load_input(None, _table(tmp_path, ("TS", "TSM", "CG"))))
    assert [(d.paradigm, d.missing) for d in designs(no_cgd)] == [("CG", ("CGD",))]


def _with_ag(tmp_path: Path, groups: dict[str, str]) -> Path:
    """The six paradigms plus AG, whose jobs train the tasks of `groups` (task -> AG job) together."""
    path = _table(tmp_path)
    rows = read_results(path).rows
    rows += [dataclasses.replace(r, paradigm="AG", job_id=f"AG-{groups[r.task]}") for r in rows if r.paradigm == "CG"]
    write_results(rows, path)
    return path


def test_ag_has_a_2x2_only_where_its_groups_are_cgds(tmp_path: Path) -> None:
    other = {"a": "g1", "b": "g2", "c": "g1", "d": "g2", "e": "g3", "f": "g3", "g": "g4", "h": "g4"}
    comp = compare(load_input(None, _with_ag(tmp_path, other)))
    assert "AG" in comp.others and [d.paradigm for d in designs(comp) if d.complete] == ["CG", "AU"]
    ag_other = next(d for d in designs(comp) if d.paradigm == "AG")  # no 2x2, and a note says why
    assert (ag_other.aggregation, ag_other.missing, ag_other.unmatched) == (None, (), (("CGD", "AG"),))
    assert "AG: no 2x2 of aggregation and MoE: CGD trained other task sets than AG" in " ".join(missing_notes(comp))
    ctl = control_of(comp, "AG")  # CGD trained other groups: AG's Δ is split by TSM (its MoE part) only
    assert ctl is not None and (ctl.control, ctl.measures) == ("TSM", "MoE")
    clinical = {t: g for t, (g, _) in TASKS.items()}
    same = compare(load_input(None, _with_ag(tmp_path, clinical)))
    ag = next(d for d in designs(same) if d.paradigm == "AG")
    assert (ag.aggregation, ag.moe) == ("CGD", "TSM")


def test_effects_by_hand_on_both_scales(tmp_path: Path) -> None:
    inp = load_input(None, _table(tmp_path))
    comp = compare(inp)
    au = next(d for d in designs(comp) if d.paradigm == "AU")
    # relative: Δ_M = 10, Δ_A = 20, Δ_AM = 50 for every task
    am, agg, moe, inter = task_effects(comp, 1.0, au)["a"]
    assert (am, agg, moe, inter) == (pytest.approx(50), pytest.approx(30), pytest.approx(20), pytest.approx(20))
    assert agg + moe == pytest.approx(am)
    inp.settings.scale = "log_ratio"
    log = compare(inp)
    am, agg, moe, inter = task_effects(log, 1.0, au)["c"]
    assert inter == pytest.approx(100 * math.log(1.5 / (1.2 * 1.1)))  # a ratio of ratios, free of the level
    assert agg == pytest.approx(100 * (math.log(1.2) + math.log(1.5 / 1.1)) / 2)
    assert moe == pytest.approx(100 * (math.log(1.1) + math.log(1.5 / 1.2)) / 2)


def test_mean_effects_carry_the_wild_cluster_interval_of_the_task_values(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path, jitter=0.05)))
    stats = effect_stats(comp, 999, 0)
    assert len(stats) == 2 * 2 * 3  # relative and log_ratio, AU and CG, three effects
    for d in designs(comp):
        per = task_effects(comp, 1.0, d)
        groups = [comp.info(t).group for t in per]
        for i, effect in enumerate(("aggregation", "MoE", "interaction"), start=1):
            (s,) = [s for s in stats if s.paradigm == d.paradigm and s.name == stat_name(effect, "relative")]
            values = [v[i] for v in per.values()]
            expected = wild_cluster_mean(values, groups, 999, 0)
            assert s.value == pytest.approx(np.mean(values)) and s.n == len(values)
            assert (s.ci, s.p) == (expected.ci, expected.p)
    log = [s for s in stats if "log_ratio" in s.name]
    assert all(s.p is None and s.ci is not None for s in log)  # one test per effect: the study's scale


def test_compare_prints_the_effects_in_text_json_and_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_table(tmp_path, jitter=0.05))
    code, text = run_cli(["compare", "--results", path], monkeypatch, capsys)
    assert code == 0, text
    assert "2x2 designs: aggregation and MoE effects" in text and "Δ aggregation (pp)" in text
    code, out = run_cli(["compare", "--results", path, "--format", "json"], monkeypatch, capsys)
    data = json.loads(out)
    rows = data["tables"]["factorial"]["rows"]
    top = [r for r in rows if r["Level"] == "all" and r["Scale"] == "relative" and r["Paradigm"] == "AU"]
    assert [r["Effect"] for r in top] == ["aggregation", "MoE", "interaction"]
    assert all(r["95 % CI low"] < r["Estimate"] < r["95 % CI high"] for r in top)
    code, csv = run_cli(["compare", "--results", path, "--format", "csv", "--table", "factorial"], monkeypatch, capsys)
    assert csv.splitlines()[0].startswith("Paradigm,Design,Scale,Effect,Level,Name,Tasks,Estimate")
    code, bad = run_cli(["compare", "--results", path, "--format", "csv", "--table", "factorail"], monkeypatch, capsys)
    assert code == 2 and "did you mean 'factorial'" in bad and "Traceback" not in bad


def test_a_study_without_tsm_says_which_paradigm_to_add_and_writes_the_rest(tmp_path: Path) -> None:
    a = analyse(load_input(None, _table(tmp_path, ("TS", "AUD", "AU"))))
    tables = {t.name: t for t in all_tables(a)}
    fact = tables["factorial"]
    assert fact.rows == [] and any("AU: no 2x2" in n and "add TSM to `paradigms`" in n for n in fact.notes)
    from usagg.analysis.render import to_markdown, to_text

    said = "(none: no 2x2 design is complete; AU needs TSM: add them to `paradigms`)"  # not a bare "(none)"
    assert fact.empty == said and said in to_text(fact) and "no 2x2 design is complete" in to_markdown(fact)
    assert {"tasks", "aggregates", "split", "statistics", "scales"} <= set(tables)
    assert fig_factorial(a) is None


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_the_report_has_the_table_and_the_figure(tmp_path: Path) -> None:
    from usagg.analysis.report import write_report

    a = analyse(load_input(None, _table(tmp_path, jitter=0.05)))
    made = fig_factorial(a)
    assert made is not None and len(made[0].axes) == 4 and "Shapley" in made[1]  # 2 designs x 2 scales
    written = write_report(a, tmp_path / "rep")
    names = {p.name for p in written}
    assert {"fig_factorial.png", "factorial.csv", "split.csv"} <= names
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "**AU 2x2** (TS, TSM, AUD, AU, relative scale, 8 tasks)" in md


def test_a_missing_baseline_job_leaves_its_task_out_not_the_2x2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """TS's job of task a failed: TS's task sets differ from TSM's by a missing job, not by another grouping, so
    both 2x2s stay, over the 7 tasks all four paradigms have, and a note names a and why."""
    path = _table(tmp_path, jitter=0.05)
    rows = read_results(path).rows
    write_results([r for r in rows if (r.paradigm, r.task) != ("TS", "a")], path)
    a = analyse(load_input(None, path))
    assert [(d.paradigm, d.aggregation, d.moe) for d in designs(a.comp)] == [("CG", "CGD", "TSM"), ("AU", "AUD", "TSM")]
    value = {(r.paradigm, r.task): r.value for r in rows}
    kept = [t for t in TASKS if t != "a"]

    def delta(p: str, t: str) -> float:
        return 100 * (value[(p, t)] / value[("TS", t)] - 1)

    agg = [(delta("AUD", t) + delta("AU", t) - delta("TSM", t)) / 2 for t in kept]  # recomputed from the table
    st = next(s for s in a.stats if s.paradigm == "AU" and s.name == stat_name("aggregation", "relative"))
    assert st.n == 7 and st.value == pytest.approx(float(np.mean(agg)), rel=1e-12)
    fact = {t.name: t for t in all_tables(a)}["factorial"]
    said = "over the 7 tasks all four paradigms have a Δ for; left out: a (baseline TS has no DSC result)."
    assert f"AU 2x2 (TS, TSM, AUD, AU): {said}" in fact.notes and f"CG 2x2 (TS, TSM, CGD, CG): {said}" in fact.notes
    args = ["compare", "--results", str(path), "--format", "csv", "--table", "factorial"]
    code, out = run_cli(args, monkeypatch, capsys)
    assert code == 0 and out.splitlines()[0].startswith("Paradigm,Design,Scale")


def test_a_study_without_a_2x2_says_why_when_its_table_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_table(tmp_path, ("AU", "CG")))  # CG differs from AU in scope only
    args = ["compare", "--results", path, "--baseline", "AU", "--format", "csv", "--table", "factorial"]
    code, out = run_cli(args, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in out and "not a table of this study" not in out
    assert (
        "--table 'factorial': this study has no 2x2 table: no compared paradigm differs from the baseline AU in "
        "both factors (scope and MoE)" in " ".join(out.split())
    )


def _planned_store(tmp_path: Path) -> Path:
    """A simulated store whose study plans TS, CG, AU, TSM, AUD and CGD, with AUD's one job failed (no results)."""
    from usagg.analysis.simulate import load_tasks, simulate_run_store
    from usagg.store import RunStore
    from usagg.store.records import new_record

    tasks = load_tasks(REPO / "tests" / "data" / "fmc_uia_tasks.yaml")[:12]
    run = simulate_run_store(tmp_path / "st", tasks, seeds=(0,), paradigms=("TS", "CG", "AU", "TSM", "CGD"))
    store = RunStore(run)
    raw = yaml.safe_load((REPO / "studies" / "demo.yaml").read_text())
    raw.pop("expect", None)
    template = plan_stages(study_from_mapping(raw, tmp_path / "demo.yaml"), lambda jobs: None).jobs[0]
    ids = [*read_results(store.results_csv).job_ids, "AUD-all-f1-s0"]
    jobs = [template.model_copy(update={"id": j, "paradigm": j.split("-")[0]}) for j in ids]
    store.write_plan([j.model_dump(mode="json") for j in jobs])
    store.paths("AUD-all-f1-s0").folder.mkdir(parents=True)
    (store.paths("AUD-all-f1-s0").record).write_text(json.dumps(new_record(jobs[-1].model_dump(mode="json"), "failed")))
    study = yaml.safe_load(store.study_yaml.read_text())
    store.write_study(yaml.safe_dump({**study, "paradigms": ["TS", "CG", "AU", "TSM", "AUD", "CGD"]}))
    store.mark_results_fresh()
    return run


def test_a_planned_control_without_results_is_named_with_its_jobs(tmp_path: Path) -> None:
    """AUD is in the stored study's `paradigms` but its job failed: the note says it was planned, names the job and
    `usagg run --retry-failed`, never 'add AUD to `paradigms`'; the study summary names it too."""
    a = analyse(load_input(_planned_store(tmp_path), None))
    assert "AUD" not in a.comp.paradigms
    tables = {t.name: t for t in all_tables(a)}
    notes = " ".join(tables["factorial"].notes)
    assert (
        "AU: no 2x2 of aggregation and MoE: AUD was planned (the stored study's `paradigms`) but none of its jobs has "
        "results (failed: AUD-all-f1-s0): `usagg run --retry-failed` runs the failed ones again" in notes
    )
    assert "add AUD to `paradigms`" not in notes
    summary = tables["summary"]
    assert ["Jobs without results", "AUD (failed: AUD-all-f1-s0)"] in summary.rows
    assert (
        "Planned without results (the stored study's `paradigms`): AUD (failed: AUD-all-f1-s0). No table has them"
        in " ".join(summary.notes)
    )


def test_the_headline_says_each_effect_with_the_digits_of_the_2x2_table(tmp_path: Path) -> None:
    comp = compare(load_input(None, _table(tmp_path)))
    stats = [
        Stat(stat_name("aggregation", comp.scale), "AU", 1.0, 3.4449, 9, "m", ci=(-19.21, 23.47)),
        Stat(stat_name("MoE", comp.scale), "AU", 1.0, -16.04, 9, "m", ci=(-210.9, 171.9)),
    ]
    (line,) = [x for x in headline(comp, stats, 1.0) if x.startswith("**AU 2x2**")]
    assert "aggregation +3.44 (95 % CI -19.2 to +23.5), MoE -16.0 (95 % CI -211 to +172);" in line  # was -210.9
    row = next(r for r in to_text(factorial_table(comp, stats, 1.0)).splitlines() if "MoE" in r and "all tasks" in r)
    assert row.split()[-5:-2] == ["-16.0", "-211", "172"]  # the same digits

"""`usagg advise` on studies with a designed answer: the advice, its leave-one-task-out accuracy, formats, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.cli_run import run_cli
from usagg.affinity import Affinity, write_affinity
from usagg.analysis.advice import LOGO, LOTO, Advice, Rule
from usagg.analysis.advice_formats import advice_json, advice_table
from usagg.analysis.advice_measured import decide
from usagg.analysis.advice_model import ridge_predict
from usagg.analysis.advice_text import verdict
from usagg.analysis.advise import CannotAdvise, advise, advise_input
from usagg.analysis.delta import compare
from usagg.analysis.inputs import load_input
from usagg.analysis.results import Row, write_results
from usagg.analysis.simulate import load_tasks, simulate_run_store
from usagg.analysis.summary import Analysis
from usagg.analysis.uncertainty import seed_interval
from usagg.store import RunStore

TASKS = Path(__file__).parent / "data" / "fmc_uia_tasks.yaml"
BASE = 0.6  # every task's TS DSC


def _rows(deltas: dict[str, dict[str, float]], n_train: dict[str, float], groups: dict[str, str]) -> list[Row]:
    """Two seeds per (paradigm, task) whose mean is exactly BASE·(1 + Δ/100), so each task's Δ is the designed one;
    CG's jobs are the clinical groups, AU's one job holds every task."""
    types = {t: ("segmentation", "classification")[i % 2] for i, t in enumerate(n_train)}
    rows = []
    for p, by_task in deltas.items():
        for seed, wobble in ((0, 1.01), (1, 0.99)):
            for t, d in by_task.items():
                job = {"TS": t, "TSM": t, "CG": groups[t]}.get(p, "all")
                metric = "DSC" if types[t] == "segmentation" else "AUC"
                value = BASE * (1 + d / 100) * wobble
                rows.append(
                    Row(
                        "designed", f"{p}-{job}-f1-s{seed}", p, groups[t], seed, 1.0, t, types[t], metric, value,
                        True, n_train[t],
                    )
                )  # fmt: skip
    return rows


# AU helps small tasks and hurts large ones (Δ = 12 − 10·(log10 n − 2)); CG the opposite (Δ = −16 + 10·(log10 n − 2)):
# small tasks should get AU, middle ones TS (both Δ < 0), large ones CG.
X = {
    "s0": 0.0, "s1": 0.1, "s2": 0.2, "s3": 0.3,
    "m0": 1.3, "m1": 1.35, "m2": 1.4, "m3": 1.45,
    "l0": 1.9, "l1": 2.0, "l2": 2.1, "l3": 2.2,
}  # fmt: skip
EXPECTED = ["AU"] * 4 + ["TS"] * 4 + ["CG"] * 4


@pytest.fixture
def by_size(tmp_path: Path) -> Path:
    n_train = {t: 10 ** (2 + x) for t, x in X.items()}
    groups = {t: f"G{i // 4}" for i, t in enumerate(X)}
    deltas = {
        "TS": {t: 0.0 for t in X},
        "CG": {t: -16 + 10 * x for t, x in X.items()},
        "AU": {t: 12 - 10 * x for t, x in X.items()},
        "TSM": {t: 1.0 for t in X},  # a task-scope control: measured, never advised
    }
    path = tmp_path / "results.csv"
    write_results(_rows(deltas, n_train, groups), path)
    return path


def test_ridge_predict_matches_the_closed_form() -> None:
    """One feature, y = 2x + 1 at x = 0..3, penalty 4: standardised slope Σzy/(Σz² + 4) = sd, so x = 5 gives 7.5."""
    x = np.arange(4.0)[:, None]
    assert ridge_predict(x, 2 * x[:, 0] + 1, np.array([[5.0]]), penalty=4.0)[0] == pytest.approx(7.5)
    assert ridge_predict(x, 2 * x[:, 0] + 1, np.array([[5.0]]), penalty=1e-9)[0] == pytest.approx(11.0)


def test_advice_follows_the_designed_size_effect(by_size: Path) -> None:
    adv = advise_input(load_input(None, by_size))
    assert adv.paradigms == ["TS", "CG", "AU"]  # TSM trains each task alone: not a choice of grouping
    assert [r.task for r in adv.rows] == list(X)
    assert [r.advised for r in adv.rows] == EXPECTED
    assert [r.best_measured for r in adv.rows] == EXPECTED
    assert [r.loto_advised for r in adv.rows] == EXPECTED
    assert (adv.hits, adv.n, adv.share) == ({LOTO: 12, LOGO: 12}, 12, 1.0)
    assert [r.logo_advised for r in adv.rows] == EXPECTED and adv.beats_trivial
    # always X is right on X's four tasks; the majority of the other 11 (or 8) tasks is never the held-out one's
    rules = {r.name: (r.advised, r.hits[LOTO], r.hits[LOGO]) for r in adv.rules}
    assert [rules[f"always {p}"] for p in ("TS", "CG", "AU")] == [("TS", 4, 4), ("CG", 4, 4), ("AU", 4, 4)]
    assert rules["majority"] == ("TS", 0, 0)  # a three-way tie on every task goes to TS
    for r in adv.rows:
        assert r.measured["AU"] == pytest.approx(12 - 10 * X[r.task])
        assert r.n_train == pytest.approx(10 ** (2 + X[r.task]), rel=1e-5)  # the CSV keeps 6 digits
        assert r.sd == (None if r.advised == "TS" else adv.rmse[r.advised])  # TS: Δ 0 by definition
        assert r.predicted == r.predicted_by[r.advised]
    # the MAE is the mean held-out error over every (task, paradigm); a linear truth leaves only the ridge's shrinkage
    errors = [abs(r.loto_predicted[p] - r.measured[p]) for r in adv.rows for p in ("CG", "AU")]  # type: ignore[operator]
    assert adv.n_errors == 24 and adv.mae == pytest.approx(float(np.mean(errors)))
    assert 0 < adv.mae < 1.0 and all(0 < v < 1.5 for v in adv.rmse.values())
    # the constant rule, scored by hand: each paradigm's mean Δ over the other tasks
    hits = 0
    for i, r in enumerate(adv.rows):
        rest = [s for j, s in enumerate(adv.rows) if j != i]
        means = {"TS": 0.0, **{p: float(np.mean([s.measured[p] for s in rest])) for p in ("CG", "AU")}}
        hits += max(means, key=lambda p: means[p]) == r.best_measured
    assert rules["highest mean Δ"][1] == hits < 12
    notes = " ".join(adv.notes)
    assert "ridge regression" in notes and "log10 n_train" in notes and "No affinity measured" in notes
    assert "Not advised: TSM" in notes and "seeds 0, 1" in notes and "fraction 1" in notes


def test_advise_takes_any_analysis_baseline(by_size: Path) -> None:
    """advise(a) measures Δ versus TS even when the analysis compared against another paradigm."""
    inp = load_input(None, by_size)
    adv = advise(Analysis(inp, compare(inp, "AU"), []))
    assert [r.advised for r in adv.rows] == EXPECTED and adv.hits[LOTO] == 12


def _affinity_store(root: Path) -> Path:
    """Eight equal-sized segmentation tasks in four clinical pairs; CG's Δ is 40 × the affinity onto the task from its
    pair mate − 4, AU's is −6 everywhere. Only the measured affinity can tell the tasks apart."""
    onto = [0.3, -0.1, 0.25, 0.0, 0.2, -0.2, 0.05, 0.35]
    tasks = [f"t{i}" for i in range(8)]
    groups = {t: f"P{i // 2}" for i, t in enumerate(tasks)}
    matrix = [[0.0] * 8 for _ in tasks]
    for i in range(8):
        matrix[i ^ 1][i] = onto[i]  # Z[mate -> task]
    rows = []
    for p, d in (("TS", [0.0] * 8), ("CG", [40 * a - 4 for a in onto]), ("AU", [-6.0] * 8)):
        for seed, wobble in ((0, 1.01), (1, 0.99)):
            for i, t in enumerate(tasks):
                job = {"TS": t, "CG": groups[t]}.get(p, "all")
                value = BASE * (1 + d[i] / 100) * wobble
                rows.append(
                    Row("aff", f"{p}-{job}-f1-s{seed}", p, groups[t], seed, 1.0, t, "segmentation", "DSC", value, True,
                        500.0)
                )  # fmt: skip
    store = RunStore(root)
    study = {"name": "aff", "tasks": [{"id": t, "type": "segmentation", "group": groups[t]} for t in tasks]}
    store.write_study(yaml.safe_dump(study, sort_keys=False))
    plan = [
        {
            "id": f"AU-all-f1-s{s}",
            "hash": f"h{s}",
            "fraction": 1.0,
            "affinity": True,
            "tasks": [{"id": t} for t in tasks],
        }
        for s in (0, 1)
    ]
    store.write_plan(plan)
    for record in plan:
        folder = store.jobs_dir / record["id"]
        folder.mkdir(parents=True)
        write_affinity(folder / "affinity.json", Affinity(tasks, matrix, job_id=record["id"], job_hash=record["hash"]))
    write_results(rows, store.results_csv)
    return root


def test_affinity_tells_the_tasks_apart(tmp_path: Path) -> None:
    store = _affinity_store(tmp_path / "aff")
    adv = advise_input(load_input(store, None))
    expected = ["CG", "TS", "CG", "TS", "CG", "TS", "TS", "CG"]
    assert [r.advised for r in adv.rows] == expected
    assert [r.best_measured for r in adv.rows] == expected
    assert (adv.hits, adv.n, adv.beats_trivial) == ({LOTO: 8, LOGO: 8}, 8, True)
    assert adv.features["CG"] == ["affinity onto the task from its CG group", "affinity from the task to that group"]
    assert "Affinity: the lookahead affinity of AU-all-f1-s0,AU-all-f1-s1" in " ".join(adv.notes)
    # the same results without the run store: no affinity, n_train and type constant, so an intercept-only model
    # (mean ΔCG +0.25: CG for all). Held out, each task moves the others' mean against itself: no hit at all, where
    # always TS is right on half the tasks, so the advice is that rule and says so first.
    blind = advise_input(load_input(None, store / "results.csv"))
    assert blind.features == {"CG": [], "AU": []}
    assert {r.model_advised for r in blind.rows} == {"CG"} and blind.rows[0].predicted_by["CG"] == pytest.approx(0.25)
    # always TS and always CG tie at 4 held-out hits; held out, CG misses by 3.25 points a task, TS by 3.5: CG
    regret = {r.name: r.regret[LOGO] for r in blind.rules}
    assert regret["always CG"] == pytest.approx(3.25) and regret["always TS"] == pytest.approx(3.5)
    assert blind.hits[LOTO] == 0 and not blind.beats_trivial and blind.best_rule.name == "always CG"
    assert blind.regret_broke_tie and not blind.default_tie
    assert "its held-out regret (3.2 points) the lowest of those tied on hits" in blind.notes[0]
    # own seeds decide t0 and t7 (ΔCG +8 and +10, their 95 % intervals above 0: one-sided 2.5 % over 2 paradigms)
    # and t1, t5 (both Δs below 0: TS); the others' CG intervals cover 0: the rule's CG (AU's −6 lies below)
    assert [r.advised for r in blind.rows] == ["CG", "TS", "CG", "CG", "CG", "TS", "CG", "CG"]
    assert [r.decided_by for r in blind.rows] == ["measurement"] * 2 + ["rule"] * 3 + ["measurement", "rule"] + [
        "measurement"
    ]
    assert blind.rows[2].evidence == "ΔAU < 0; CG covers 0" and blind.rows[5].evidence == "every Δ's interval < 0"
    assert "No affinity measured" in " ".join(blind.notes) and "CG: intercept only" in " ".join(blind.notes)


def test_simulated_study_beats_the_trivial_rules(tmp_path: Path) -> None:
    """On the simulator's 27 tasks (aggregation helps with data, hurts segmentation) size and type carry signal."""
    run_dir = simulate_run_store(tmp_path / "fmc", load_tasks(TASKS))
    adv = advise_input(load_input(run_dir, None))
    assert adv.n == 27 and adv.beats_trivial and adv.mae < adv.constant_mae
    assert all(adv.hits[s] > r.hits[s] for r in adv.rules for s in (LOTO, LOGO))
    assert adv.notes[0].startswith("The model beats every trivial rule")
    table = advice_table(adv)
    assert table.name == "advice" and len(table.rows) == 27
    assert table.columns[9:11] == ["ΔCG % measured", "ΔAU % measured"]


@pytest.mark.parametrize("fmt", ["table", "csv", "markdown", "json"])
def test_cli_formats(
    by_size: Path, fmt: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["advise", "--results", str(by_size), "--format", fmt], monkeypatch, capsys)
    assert code == 0, text
    accuracy = "leave-one-task-out: the model's advice is the best measured paradigm for 12 of 12 tasks (100 %)"
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["Advice"] for r in rows] == EXPECTED and [r["LOTO hit"] for r in rows] == ["yes"] * 12
        assert [r["LOGO hit"] for r in rows] == ["yes"] * 12 and [r["Model advice"] for r in rows] == EXPECTED
        assert float(rows[0]["ΔAU % measured"]) == pytest.approx(12.0)
    elif fmt == "json":
        out = json.loads(text)
        assert out["beats_trivial"] is True and out["predicted_advice_by"] == "model"
        assert out["accuracy"]["hits"] == out["accuracy"]["logo_hits"] == 12 and out["accuracy"]["share"] == 1.0
        rules = {r["name"]: r["hits"] for r in out["rules"]}
        assert rules["always AU"] == {"leave-one-task-out": 4, "leave-one-group-out": 4}
        assert rules["majority"] == {"leave-one-task-out": 0, "leave-one-group-out": 0}
        assert [t["advised"] for t in out["tasks"]] == EXPECTED
        assert out["tasks"][0]["delta_bounds"] == [pytest.approx(-100.0), pytest.approx(100 * (1 / 0.6 - 1), rel=1e-4)]
        assert out["model"]["penalty"] == 1.0 and "log10 n_train" in out["model"]["features"]["AU"]
        assert accuracy in out["accuracy"]["text"] and out["notes"][0] == out["verdict"]
    elif fmt == "markdown":
        assert accuracy in text and "leave-one-task-out 12/12, leave-one-group-out 12/12 advised = best" in text
        lines = [" ".join(line.split()) for line in text.splitlines()]  # pandas pads the cells to column width
        (row,) = [line for line in lines if line.startswith("| s0 |")]
        assert row.startswith("| s0 | G0 | segmentation | 100 | AU | measurement | ΔAU +12.0 [+5.2, +18.8] | +1")
        assert row.endswith("| -16.0 | +12.0 | AU | AU | AU | yes | AU | yes |")
    else:
        said = text.index("The model beats every trivial rule")
        assert said < text.index("Advice per task (fraction 1, seeds averaged)") < text.index(accuracy)
        cells = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()[:2] in X}
        assert [cells[t][1].rstrip("*") for t in X] == EXPECTED  # Task n Advice ...
        assert cells["s0"][1] == "AU*" and cells["m0"][1] == "TS"  # s0's ΔAU +12 decides; m0's intervals do not
        assert cells["s0"][3:] == ["-16.0", "+12.0", "AU", "AU", "✓", "AU", "✓"]  # ΔCG, ΔAU, best, LOTO, LOGO


def _store_csv(tmp_path: Path, deltas: dict[str, dict[str, float]]) -> Path:
    tasks = next(iter(deltas.values()))
    path = tmp_path / "results.csv"
    write_results(_rows(deltas, {t: 300.0 * (i + 1) for i, t in enumerate(tasks)}, {t: "G" for t in tasks}), path)
    return path


@pytest.mark.parametrize(
    ("deltas", "message"),
    [
        (
            {"TS": {"a": 0, "b": 0, "c": 0}, "AU": {"a": 1, "b": 2, "c": 3}},
            "only 3 tasks (a, b, c) have a TS result at fraction 1",
        ),
        (
            {"CG": {t: 1 for t in "abcde"}, "AU": {t: 2 for t in "abcde"}},
            "the results have no TS baseline (paradigms present: CG, AU)",
        ),
        (
            {"TS": {t: 0 for t in "abcde"}, "TSM": {t: 1 for t in "abcde"}},
            "no paradigm besides TS that trains tasks together has Δs to learn from",
        ),
    ],
)
def test_cannot_advise_says_why(
    tmp_path: Path,
    deltas: dict[str, dict[str, float]],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _store_csv(tmp_path, deltas)
    with pytest.raises(CannotAdvise, match="cannot advise on"):
        advise_input(load_input(None, path))
    code, text = run_cli(["advise", "--results", str(path)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text, text
    assert text.startswith("error: cannot advise on") and message in " ".join(text.split())


@pytest.mark.parametrize("value", ["", "nan"])
def test_a_baseline_without_any_value_cannot_be_advised_on(
    tmp_path: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every TS value missing (the store writes an undefined metric empty): a named refusal, not max() of nothing."""
    path = tmp_path / "r.csv"
    path.write_text(
        "study,job_id,paradigm,group,seed,fraction,task,type,metric,value,higher_is_better,n_train,steps\n"
        f"x,j,TS,G,0,1,t,segmentation,DSC,{value},true,10,5\n"
    )
    code, text = run_cli(["advise", "--results", str(path)], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in text, text
    assert "cannot advise on" in text and "no TS row has a value (every TS value is empty or nan)" in text


def test_a_task_without_a_ts_value_is_named_not_silently_dropped(tmp_path: Path) -> None:
    import dataclasses

    from usagg.analysis.simulate import simulate_rows

    rows = simulate_rows(load_tasks(TASKS))
    rows = [dataclasses.replace(r, value=float("nan")) if (r.paradigm, r.task) == ("TS", "FUGC") else r for r in rows]
    write_results(rows, tmp_path / "r.csv")
    a = advise_input(load_input(None, tmp_path / "r.csv"))
    assert "Not advised on: FUGC (no TS value at fraction 1" in " ".join(a.notes)
    assert "FUGC" not in {row.task for row in a.rows}


def test_unknown_format_is_refused(
    by_size: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run_cli(["advise", "--results", str(by_size), "--format", "latex"], monkeypatch, capsys)
    assert code == 2 and "--format 'latex' is not one of table, csv, markdown, json" in text


def _catalog_rows(deltas: dict[str, dict[str, float]], n_train: dict[str, float], base: dict[str, float]) -> list[Row]:
    """The 27 catalog tasks with their own types, groups and primary metrics; two seeds whose mean is exactly the
    designed Δ (lower-is-better MRE moves the other way)."""
    rows = []
    for t in load_tasks(TASKS):
        tid, ttype, metric = t["id"], t["type"], t["metric"]
        hib = metric != "MRE"
        for p, by_task in deltas.items():
            job = {"TS": tid, "CG": t["group"]}.get(p, "all")
            value = base[tid] * (1 + by_task[tid] / 100 if hib else 1 - by_task[tid] / 100)
            for seed, wobble in ((0, 1.01), (1, 0.99)):
                rows.append(
                    Row("groups", f"{p}-{job}-f1-s{seed}", p, t["group"], seed, 1.0, tid, ttype, metric,
                        value * wobble, hib, n_train[tid])
                )  # fmt: skip
    return rows


def test_a_group_effect_without_task_signal_does_not_beat_the_trivial_rules(tmp_path: Path) -> None:
    """Δ is a clinical-group effect plus noise, unrelated to size or type: the held-out hits of the model, and of
    every trivial rule, recomputed here with scikit-learn's ridge; the advice is the best rule and says so first."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tasks = load_tasks(TASKS)
    rng = np.random.default_rng(4)
    effect = {"OB": (6.0, -4.0), "Breast": (-8.0, 3.0), "Lung": (2.0, 5.0), "Cardiovascular": (-5.0, -6.0),
              "Thyroid": (4.0, -2.0), "Gynaecology": (-3.0, 4.0), "Abdomen": (5.0, 1.0), "Multi-organ": (-2.0, 6.0),
              "Musculoskeletal": (3.0, -3.0)}  # fmt: skip
    ids = [t["id"] for t in tasks]
    group = {t["id"]: t["group"] for t in tasks}
    n_train = {t: float(round(10 ** rng.uniform(1.8, 3.5))) for t in ids}
    base = {t["id"]: (20.0 if t["metric"] == "MRE" else 0.7) for t in tasks}
    deltas = {"TS": {t: 0.0 for t in ids}}
    for i, p in enumerate(("CG", "AU")):
        deltas[p] = {t: effect[group[t]][i] + rng.normal(0, 1.0) for t in ids}
    path = tmp_path / "results.csv"
    write_results(_catalog_rows(deltas, n_train, base), path)
    adv = advise_input(load_input(None, path))

    # by hand: the best measured paradigm, the bounds of each Δ, the model's held-out advice, the rules' hits
    order = ["TS", "CG", "AU"]
    best = {t: max(order, key=lambda p: (deltas[p][t], -order.index(p))) for t in ids}
    types = sorted({t["type"] for t in tasks})
    x = np.asarray(
        [[np.log10(n_train[t]), *[float(tk["type"] == ty) for ty in types]] for t, tk in zip(ids, tasks, strict=True)]
    )
    upper = {t: (100.0 if base[t] == 20.0 else (1 / base[t] - 1) * 100) for t in ids}
    lower = {t: (-np.inf if base[t] == 20.0 else -100.0) for t in ids}

    def held_out_advice(folds: list[list[str]]) -> dict[str, str]:
        out = {}
        for fold in folds:
            fit = [i for i, t in enumerate(ids) if t not in fold]
            new = [ids.index(t) for t in fold]
            pred = {"TS": np.zeros(len(fold))}
            for p in ("CG", "AU"):
                model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
                model.fit(x[fit], [deltas[p][ids[i]] for i in fit])
                pred[p] = np.clip(model.predict(x[new]), [lower[t] for t in fold], [upper[t] for t in fold])
            for k, t in enumerate(fold):
                out[t] = max(order, key=lambda p: (pred[p][k], -order.index(p)))
        return out

    by_group = [[t for t in ids if group[t] == g] for g in dict.fromkeys(group[t] for t in ids)]
    schemes = {LOTO: [[t] for t in ids], LOGO: by_group}
    for scheme, folds in schemes.items():
        advice = held_out_advice(folds)
        assert adv.hits[scheme] == sum(advice[t] == best[t] for t in ids)
        rows_by_task = {r.task: r for r in adv.rows}
        assert all(
            (rows_by_task[t].loto_advised if scheme == LOTO else rows_by_task[t].logo_advised) == advice[t] for t in ids
        )
        rules = {r.name: r.hits[scheme] for r in adv.rules}
        regret = {r.name: r.regret[scheme] for r in adv.rules}
        for p in order:
            assert rules[f"always {p}"] == sum(best[t] == p for t in ids)
            assert regret[f"always {p}"] == pytest.approx(np.mean([deltas[best[t]][t] - deltas[p][t] for t in ids]))
        assert adv.regret[scheme] == pytest.approx(np.mean([deltas[best[t]][t] - deltas[advice[t]][t] for t in ids]))
        majority = 0
        for fold in folds:
            rest = [best[t] for t in ids if t not in fold]
            pick = max(order, key=lambda p: (rest.count(p), -order.index(p)))
            majority += sum(best[t] == pick for t in fold)
        assert rules["majority"] == majority
    top = max(adv.rules, key=lambda r: (r.hits[LOGO], -adv.rules.index(r)))
    assert not adv.beats_trivial and adv.best_rule == top
    assert adv.hits[LOGO] <= top.hits[LOGO]
    # a task its own seeds decide gets its best measured paradigm; the others the rule's, unless their own interval
    # puts it below 0 (then TS)
    for r in adv.rows:
        ci = r.intervals.get(top.advised)
        ruled = "TS" if ci is not None and ci[1] < 0 else top.advised
        assert r.advised == (best[r.task] if r.decided_by == "measurement" else ruled), r.task
    assert 0 < len(adv.measured) < len(adv.rows)
    assert adv.notes[0].startswith(f"The model does not beat the trivial rule '{top.name}'")
    assert "the rule" in advice_table(adv).title and advice_json(adv)["beats_trivial"] is False


def test_predictions_stay_within_what_the_metric_allows(tmp_path: Path) -> None:
    """A steep fall of Δ with size: unbounded, the ridge extrapolates an IoU below −100 % (an IoU below 0); bounded,
    no prediction leaves [−100, (1/TS − 1)·100] and the lowest is exactly −100."""
    logn = {"a": 1.0, "b": 1.1, "c": 1.2, "d": 1.3, "e": 3.0}
    au = {"a": 40.0, "b": 10.0, "c": -20.0, "d": -50.0, "e": -95.0}
    rows = []
    for p, d in (("TS", {t: 0.0 for t in logn}), ("AU", au)):
        for seed in (0, 1):
            for t in logn:
                job = t if p == "TS" else "all"
                rows.append(
                    Row("bounded", f"{p}-{job}-f1-s{seed}", p, f"G{t}", seed, 1.0, t, "detection", "IoU",
                        0.5 * (1 + d[t] / 100), True, 10 ** logn[t])
                )  # fmt: skip
    write_results(rows, tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    x = np.asarray([[v] for v in logn.values()])
    held = [ridge_predict(np.delete(x, i, 0), np.delete(list(au.values()), i), x[[i]])[0] for i in range(5)]
    assert min(held) < -100  # what the unbounded model says
    for r in adv.rows:
        assert r.bounds == (pytest.approx(-100.0), pytest.approx(100.0))  # IoU in [0, 1], TS 0.5
        for v in (*r.predicted_by.values(), *r.loto_predicted.values()):
            assert -100.0 <= v <= 100.0
    assert min(r.loto_predicted["AU"] for r in adv.rows) == -100.0
    # (n_train goes through the CSV with 6 digits, hence the tolerance)
    assert [r.loto_predicted["AU"] for r in adv.rows] == pytest.approx([max(-100.0, v) for v in held], abs=1e-3)


def test_a_task_with_ts_at_chance_is_not_advised_on(tmp_path: Path) -> None:
    """A classification task whose TS AUC is at chance: left out of the models and the rules, as of every aggregate,
    and named."""
    n_train = {t: 10 ** (2 + x) for t, x in X.items()}
    groups = {t: f"G{i // 4}" for i, t in enumerate(X)}
    deltas = {"TS": {t: 0.0 for t in X}, "CG": {t: -16 + 10 * x for t, x in X.items()}, "AU": {t: 5.0 for t in X}}
    rows = [
        r if not (r.task == "s1" and r.paradigm == "TS") else Row(**{**r.__dict__, "value": 0.5})
        for r in _rows(deltas, n_train, groups)
    ]  # s1 is a classification task (odd index): AUC 0.5 under TS
    write_results(rows, tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    assert "s1" not in {r.task for r in adv.rows} and len(adv.rows) == len(X) - 1
    assert "Not advised on: s1 (TS at chance" in " ".join(adv.notes)


def test_few_tasks_an_advice_that_is_not_the_best_measured_and_a_measured_loss(tmp_path: Path) -> None:
    """Five tasks in two groups: the note says one task decides between model and rules. Where the advice is not a
    task's best measured paradigm and its own measurement does not decide, the note names it with the measured Δ and
    interval; a paradigm measured below 0 for a task is never its advice, whatever the rule."""
    tasks = {"a": 0.0, "b": 0.5, "c": 1.0, "d": 1.5, "e": 2.0}
    n_train = {t: 10 ** (2 + x) for t, x in tasks.items()}
    groups = {t: ("G0", "G0", "G0", "G1", "G1")[i] for i, t in enumerate(tasks)}
    for e, advised in ((-2.0, "AU"), (-20.0, "TS")):  # AU wins everywhere but e, where TS is best
        au = {"a": 8.0, "b": 7.0, "c": 6.0, "d": 9.0, "e": e}
        deltas = {"TS": {t: 0.0 for t in tasks}, "CG": {t: -5.0 for t in tasks}, "AU": au}
        write_results(_rows(deltas, n_train, groups), tmp_path / "r.csv")
        adv = advise_input(load_input(None, tmp_path / "r.csv"))
        notes = " ".join(adv.notes)
        assert "Few cases: the model and the rules are compared on 5 tasks in 2 clinical groups" in notes
        assert adv.best_rule.name == "always AU" and not adv.beats_trivial  # 4 of 5 held out
        row = adv.rows[-1]
        assert (row.task, row.advised, row.decided_by) == ("e", advised, "rule")
        if advised == "AU":  # ΔAU −2 covers 0: the rule's AU, said to be against its best measured TS
            lo, hi = row.intervals["AU"] or (0.0, 0.0)
            assert lo < -2.0 < 0.0 < hi
            assert (
                f"not the best measured paradigm for e (advised AU, ΔAU -2.0 [{lo:+.1f}, {hi:+.1f}]; best measured TS)"
                in notes
            )
        else:  # ΔAU −20 lies below 0: TS, not the rule's AU, and nothing to say against it
            assert row.evidence.startswith("ΔAU < 0") and "not the best measured paradigm for e" not in notes
        assert all(r.advised == "AU" for r in adv.rows[:4])  # AU best measured on a-d, by the rule or their seeds


def _seeded_rows(
    deltas: dict[str, dict[str, float]], spread: dict[str, float | dict[str, float]], seeds: int
) -> list[Row]:
    """Classification tasks in two groups whose paradigm seeds are BASE·(1 + Δ/100)·(1 ± spread): each seed mean is
    the designed Δ and its seed sd is known (TS's at most 1 %, so it stays above chance); CG's jobs are the groups,
    AU's one job."""
    tasks = list(next(iter(deltas.values())))
    group = {t: f"G{i % 2}" for i, t in enumerate(tasks)}
    rows = []
    for p, by_task in deltas.items():
        for seed in range(seeds):
            sign = (1, -1)[seed % 2] if seeds > 1 else 0
            for i, t in enumerate(tasks):
                job = {"TS": t, "CG": group[t]}.get(p, "all")
                sp = spread[t] if isinstance(spread[t], float) else spread[t][p]  # type: ignore[index]
                value = BASE * (1 + by_task[t] / 100) * (1 + sign * (min(sp, 0.01) if p == "TS" else sp))
                rows.append(
                    Row("own", f"{p}-{job}-f1-s{seed}", p, group[t], seed, 1.0, t, "classification", "AUC", value,
                        True, 100.0 * (i + 1))
                )  # fmt: skip
    return rows


def test_a_tasks_own_seeds_decide_its_advice_where_their_intervals_do(tmp_path: Path) -> None:
    """Measured first: a gain whose Bonferroni seed interval lies above 0 is advised whatever the model or rule says
    (the highest of several, named); every interval below 0 advises TS; an interval over 0 leaves the prediction."""
    deltas = {
        "TS": {"big": 0.0, "two": 0.0, "loss": 0.0, "open": 0.0, "noisy": 0.0},
        "CG": {"big": 55.0, "two": 20.0, "loss": -30.0, "open": 3.0, "noisy": -2.0},
        "AU": {"big": 50.0, "two": 30.0, "loss": -25.0, "open": -3.0, "noisy": 8.0},
    }
    spread = {"big": 0.01, "two": 0.01, "loss": 0.01, "open": 0.05, "noisy": 0.2}
    write_results(_seeded_rows(deltas, spread, seeds=4), tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    assert adv.level == pytest.approx(1 - 2 * 0.05 / 2)  # each bound one-sided at 2.5 %
    by = {r.task: r for r in adv.rows}
    assert [by[t].decided_by for t in deltas["TS"]] == ["measurement"] * 3 + [by["open"].decided_by] * 2
    assert by["open"].decided_by in ("model", "rule") and by["noisy"].decided_by == by["open"].decided_by
    assert (by["big"].advised, by["two"].advised, by["loss"].advised) == ("CG", "AU", "TS")
    assert by["two"].evidence.startswith("ΔAU +30.0 [") and by["two"].evidence.endswith("; CG also > 0")
    assert by["loss"].evidence == "every Δ's interval < 0" and by["open"].evidence == "CG/AU cover 0"
    # the interval is the t interval over the 4 seeds at 95 %: both paradigms' seed variances (delta method on the
    # relative change), Welch df; recomputed here from the designed values
    from scipy.stats import t as student

    m_p = np.array([BASE * 1.55 * (1 + s * 0.01) for s in (1, -1, 1, -1)])
    m_b = np.array([BASE * (1 + s * 0.01) for s in (1, -1, 1, -1)])
    terms = [
        (100 / m_b.mean()) ** 2 * m_p.var(ddof=1) / 4,
        (100 * m_p.mean() / m_b.mean() ** 2) ** 2 * m_b.var(ddof=1) / 4,
    ]
    df = sum(terms) ** 2 / sum(v**2 / 3 for v in terms)
    half = student.ppf(1 - 0.025, df) * np.sqrt(sum(terms))
    assert by["big"].intervals["CG"] == pytest.approx((55.0 - half, 55.0 + half), rel=1e-9)
    notes = " ".join(adv.notes)
    assert (
        "Measured first: the study's own measurement decides the advice of 3 of 5 tasks: big → CG, loss → TS, two → AU."
        in notes
    )
    assert "at 95.0 % two-sided, each bound one-sided at 2.5 % (Bonferroni over the 2 paradigms besides TS" in notes
    table = advice_table(adv)
    assert "own measurement decides 3 of 5, else " in table.title
    assert table.columns[4:7] == ["Advice", "Advice from", "Own measurement (95.0 % interval)"]
    out = advice_json(adv)
    assert out["measured_first"]["tasks"] == ["big", "loss", "two"]
    assert out["tasks"][0]["intervals"]["CG"] == pytest.approx([55.0 - half, 55.0 + half], rel=1e-9)


def test_one_seed_never_decides(tmp_path: Path) -> None:
    """With one seed training noise is unmeasured: no task's measurement decides, however large its Δ."""
    deltas = {
        "TS": {t: 0.0 for t in "abcde"},
        "CG": {"a": 60.0, "b": -40.0, "c": 5.0, "d": 2.0, "e": -1.0},
        "AU": {"a": 50.0, "b": -50.0, "c": 1.0, "d": 3.0, "e": 1.0},
    }
    write_results(_seeded_rows(deltas, dict.fromkeys("abcde", 0.0), seeds=1), tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    assert {r.decided_by for r in adv.rows} <= {"model", "rule"} and not adv.measured
    assert {r.evidence for r in adv.rows} == {"one seed"}
    assert "One seed: no task's own measurement can decide its advice" in " ".join(adv.notes)
    assert "with two or more seeds a task's own Δ decides" in " ".join(adv.notes)


def test_rules_that_tie_but_agree_are_no_default() -> None:
    """Tied rules advising one paradigm (always TS and the majority, both TS) leave nothing to a default."""
    rules = [Rule("always TS", "TS", {LOTO: 3}), Rule("always AU", "AU", {LOTO: 2}), Rule("majority", "TS", {LOTO: 3})]
    adv = Advice(
        study="s", fraction=1.0, seeds=[0, 1], paradigms=["TS", "AU"], rows=[], features={}, rmse={}, hits={LOTO: 1},
        regret={LOTO: 0.0}, n=5, mae=1.0, n_errors=5, constant_mae=1.0, rules=rules, notes=[], level=0.9,
        test_set=False,
    )  # fmt: skip
    assert adv.tied_rules == ["always TS", "majority"] and not adv.default_tie
    assert "2 rules tie there, all advising TS); the model's own advice" in verdict(adv)
    assert "rules tie, agreeing" in advice_table(adv).title
    adv.rules[2] = Rule("majority", "AU", {LOTO: 3})
    assert adv.default_tie and "a default rather than a finding" in verdict(adv)


def test_a_decided_gain_is_advised_though_another_measured_higher_undecided(tmp_path: Path) -> None:
    """CG gains +10 beyond its seeds' noise, AU +25 within its much larger noise: CG is advised (a gain on TS is
    certain), and the evidence names AU as measured higher but undecided."""
    deltas = {
        "TS": {"mix": 0.0, "b": 0.0, "c": 0.0, "d": 0.0},
        "CG": {"mix": 10.0, "b": 1.0, "c": -1.0, "d": 2.0},
        "AU": {"mix": 25.0, "b": -1.0, "c": 1.0, "d": -2.0},
    }
    spread: dict[str, float | dict[str, float]] = {"mix": {"TS": 0.01, "CG": 0.01, "AU": 0.3}, "b": 0.05, "c": 0.05}
    spread["d"] = 0.05
    write_results(_seeded_rows(deltas, spread, seeds=4), tmp_path / "r.csv")
    row = next(r for r in advise_input(load_input(None, tmp_path / "r.csv")).rows if r.task == "mix")
    lo, hi = row.intervals["AU"] or (0.0, 0.0)
    assert (row.advised, row.decided_by) == ("CG", "measurement") and lo < 0 < hi
    assert row.evidence.startswith("ΔCG +10.0 [") and row.evidence.endswith("; AU measured higher, undecided")


def test_the_test_sets_variance_never_narrows_a_tasks_own_interval(tmp_path: Path) -> None:
    """Two seeds put the seeds' t on 1-2 df; the test set's variance, known without error, raises Welch's df, and
    with it the t interval could come out narrower than the seeds' own: the interval decided on spans both."""
    deltas = {"TS": {t: 0.0 for t in "abcd"}, "CG": {"a": 30.0, "b": 5.0, "c": -5.0, "d": 0.0}}
    write_results(_seeded_rows(deltas, dict.fromkeys("abcd", 0.05), seeds=2), tmp_path / "r.csv")
    comp = compare(load_input(None, tmp_path / "r.csv"))
    seeds = seed_interval(comp, 1.0, "a", "CG", 0.95)
    assert seeds is not None and seeds.ci is not None
    half = (seeds.ci[1] - seeds.ci[0]) / 2
    added = seed_interval(comp, 1.0, "a", "CG", 0.95, (half / 20) ** 2)
    assert added is not None and added.ci is not None and added.ci[1] - added.ci[0] < 2 * half  # the df effect
    decision = decide(comp, 1.0, "a", ["CG"], 0.95, {"CG": (half / 20) ** 2})
    assert decision.intervals["CG"] == pytest.approx(seeds.ci, rel=1e-12)


def test_one_seed_of_ts_never_decides(tmp_path: Path) -> None:
    """Four seeds of CG and AU but one of TS: TS's training noise is unmeasured, not 0, so no task's own
    measurement decides (with TS's noise taken as 0, big's CG +55 % did), and the evidence says why."""
    deltas = {
        "TS": dict.fromkeys(("big", "two", "loss", "open", "noisy"), 0.0),
        "CG": {"big": 55.0, "two": 20.0, "loss": -30.0, "open": 3.0, "noisy": -2.0},
        "AU": {"big": 50.0, "two": 30.0, "loss": -25.0, "open": -3.0, "noisy": 8.0},
    }
    rows = _seeded_rows(deltas, dict.fromkeys(deltas["TS"], 0.01), seeds=4)
    write_results([r for r in rows if r.paradigm != "TS" or r.seed == 0], tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    assert not adv.measured and {r.evidence for r in adv.rows} == {"TS one seed"}
    assert all(ci is None for r in adv.rows for ci in r.intervals.values())
    notes = " ".join(adv.notes)
    assert "One seed: no task's own measurement can decide its advice" in notes
    assert "TS has one seed where the other paradigms have more" in notes and "--retry-failed" in notes
    comp = compare(load_input(None, tmp_path / "r.csv"))
    st = seed_interval(comp, 1.0, "big", "CG")
    assert st is not None and st.ci is None and st.note == "baseline TS: one seed, no spread" and st.n == 4


def test_a_task_whose_ts_gives_no_delta_is_not_advised_on(tmp_path: Path) -> None:
    """TS's DSC 0 at every seed (a collapsed baseline): every Δ is undefined, so the task is named beside the ones at
    chance and left out, never advised TS for the false reason 'one seed'."""
    n_train = {t: 10 ** (2 + x) for t, x in X.items()}
    groups = {t: f"G{i // 4}" for i, t in enumerate(X)}
    deltas = {"TS": {t: 0.0 for t in X}, "CG": {t: -16 + 10 * x for t, x in X.items()}, "AU": {t: 5.0 for t in X}}
    rows = [
        Row(**{**r.__dict__, "value": 0.0}) if (r.task, r.paradigm) == ("s0", "TS") else r
        for r in _rows(deltas, n_train, groups)
    ]  # s0 is a segmentation task (even index): DSC 0 under TS, at both seeds
    write_results(rows, tmp_path / "r.csv")
    adv = advise_input(load_input(None, tmp_path / "r.csv"))
    assert "s0" not in {r.task for r in adv.rows} and len(adv.rows) == len(X) - 1
    assert (
        "Not advised on: s0 (TS's DSC is 0 over 2 seeds: baseline metric is 0, relative change undefined): no "
        "paradigm has a Δ on this scale to learn from or to check against" in " ".join(adv.notes)
    )
    assert "one seed" not in {r.evidence for r in adv.rows}

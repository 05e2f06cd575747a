"""Issue 25.4, the selection gap: every job records each task's epoch and test metric under model-scope selection,
task-scope selection and the last epoch (metrics.json `selection.rules`), and compare and the report set Δm under
the three side by side with the gap (task − model) and its interval.

The engine's record is checked against a brute-force test evaluation at every epoch and against the selection
rule recomputed here from the history; the analysis against a hand computation from the jobs' metrics.json.
"""

from __future__ import annotations

import io
import json
import math
from csv import DictReader
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.tiny_study import BIOMETRY, BREAST, NODULE, write_tiny_study
from usagg.analysis.cluster_inference import wild_cluster_mean
from usagg.analysis.inputs import load_input
from usagg.analysis.selection_gap import NO_STORE, NOT_RECORDED, gap_table, selection_gap
from usagg.analysis.summary import analyse
from usagg.atomic import JSON_CHECKSUM_KEY, write_json_checked
from usagg.jobmetrics import NO_SELECTION_SPLIT, SELECTION_RULES, JobMetrics
from usagg.store import RunStore

HIGHER = {"IoU": True, "MRE": False, "AUC": True}


def _study(tmp: Path, select: float = 0.25) -> Path:
    return write_tiny_study(
        tmp / "study.yaml",
        "selection-gap",
        tmp,
        paradigms=("TS", "AU"),
        tasks=(NODULE, BIOMETRY, BREAST),
        epochs=5,
        steps=3,
        synthetic={"val_size": 8},
        data_keys={"selection_fraction": select},
        model={"moe": {"experts": 4}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
        extra={"analysis": {"chance_tasks": "include", "bootstrap": 500}},
    )


# ----- the rule, recomputed from the history (selection.py's docstring, written out again)


def _best_epochs(history: list[dict[str, Any]], metrics: dict[str, str]) -> tuple[int, dict[str, int]]:
    """The model-scope epoch and each task's own epoch by the documented rule: the mean relative change of the
    primary metric versus the first epoch (|reference| floored at 0.05, sign by direction), ties to the lower loss
    (relative to the first epoch for the model), then the later epoch."""
    first = history[0]
    ref = {t: first["select"][t][m] for t, m in metrics.items()}
    ref_loss = first["select_loss"]

    def sign(t: str) -> float:
        return 1.0 if HIGHER[metrics[t]] else -1.0

    def better(new: tuple[float, float], old: tuple[float, float] | None) -> bool:
        if old is None or abs(new[0] - old[0]) > 1e-12 * max(1.0, abs(old[0])):
            return old is None or new[0] > old[0]
        return not new[1] > old[1] + 1e-12 * abs(old[1])  # a lower loss, or a tie of both: the later epoch

    model: tuple[int, tuple[float, float] | None] = (0, None)
    own: dict[str, tuple[int, tuple[float, float] | None]] = {t: (0, None) for t in metrics}
    for h in history:
        vals = {t: h["select"][t][m] for t, m in metrics.items()}
        score = sum(sign(t) * (vals[t] - ref[t]) / max(abs(ref[t]), 0.05) for t in metrics) / len(metrics)
        loss = sum(h["select_loss"][t] / ref_loss[t] for t in metrics) / len(metrics)
        if better((score, loss), model[1]):
            model = (h["epoch"], (score, loss))
        for t in metrics:
            cand = (sign(t) * vals[t], h["select_loss"][t])
            if better(cand, own[t][1]):
                own[t] = (h["epoch"], cand)
    return model[0], {t: e for t, (e, _) in own.items()}


@pytest.mark.slow  # trains a real tiny job twice
def test_rule_record_equals_a_test_pass_at_every_epoch_and_the_rule_from_history(tmp_path: Path) -> None:
    import torch

    from usagg.engine.callbacks import Callback
    from usagg.engine.device import resolve_compute, seed_everything
    from usagg.engine.evaluate import evaluate
    from usagg.engine.job import _eval_sets, build_trainer
    from usagg.engine.jobdata import load_job_data
    from usagg.engine.selecting import RuleTests
    from usagg.plan import plan
    from usagg.spec.load import load_study

    cpu = torch.device("cpu")
    job = next(j for j in plan(load_study(_study(tmp_path))) if j.paradigm == "AU")
    job = job.model_copy(update={"training": job.training.model_copy(update={"checkpoint_every": 1})})
    metrics = {t.id: t.metric or "" for t in job.tasks}

    class EveryEpoch(Callback):
        """Brute force: the full test evaluation (every metric, as the job's final one) after every epoch."""

        def __init__(self, test: dict) -> None:
            self.test, self.values = test, {}

        def on_epoch_end(self, trainer: Any, entry: dict[str, Any]) -> None:
            res = evaluate(trainer.model, self.test, trainer.compute, 16)
            self.values[entry["epoch"]] = {t: r.metrics[metrics[t]] for t, r in res.items()}

    def fit(ckpt: Path, *watch: Callback, stop: int | None = None) -> Any:
        seed_everything(job.seed, cpu)
        data = load_job_data(job)
        trainer = build_trainer(job, ckpt, resolve_compute("fp32", cpu), data=data, callbacks=watch)
        return trainer, trainer.fit(stop_after_epoch=stop)

    test = _eval_sets(job, load_job_data(job).test, cpu)
    rules, brute = RuleTests(job.tasks, test, job.training), EveryEpoch(test)
    trainer, result = fit(tmp_path / "a", rules, brute)
    record = rules.record(trainer.selector, trainer.state.epoch)

    model_epoch, own = _best_epochs(trainer.state.history, metrics)
    assert result.selected_epoch == model_epoch  # the job's own choice (scope model) is the recomputed one
    for t in metrics:
        rec = record[t]
        assert rec["metric"] == metrics[t]
        assert {r: rec[r]["epoch"] for r in SELECTION_RULES} == {"model": model_epoch, "task": own[t], "last": 5}
        for r in SELECTION_RULES:
            assert rec[r]["test"] == brute.values[rec[r]["epoch"]][t], (t, r)  # exact: the same weights
    assert len({rec[r]["epoch"] for rec in record.values() for r in SELECTION_RULES}) > 1  # the rules differ here
    assert rules.passes <= 5 * len(metrics)  # only the epochs that became a choice, plus the last

    # the record watched without touching training: a fit without the watchers ends with the same weights
    plain, _ = fit(tmp_path / "b")
    assert plain.state.history == trainer.state.history
    assert all(torch.equal(v, plain.model.state_dict()[k]) for k, v in trainer.model.state_dict().items())

    # killed after epoch 3 and resumed: the same record (the tested values ride in last.pt)
    first = RuleTests(job.tasks, test, job.training)
    fit(tmp_path / "c", first, stop=3)
    again = RuleTests(job.tasks, test, job.training)
    resumed, _ = fit(tmp_path / "c", again)
    assert again.record(resumed.selector, resumed.state.epoch) == record


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    """The study run through the runner: three TS jobs and one AU job, each with a selection split."""
    from usagg.engine.runner import run_one
    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study

    tmp = tmp_path_factory.mktemp("gap")
    study = load_study(_study(tmp))
    jobs = plan(study)
    st = RunStore(tmp / "runs")
    st.init(dump_study(study), jobs)
    for job in jobs:
        assert run_one(str(st.root), job.id, device="cpu", threads=1) == "done", st.error_text(job.id)
    st.rebuild_results()
    return st


def _rules(st: RunStore) -> dict[str, tuple[str, JobMetrics]]:
    """job id -> (paradigm, its metrics.json)."""
    out = {}
    for jid in st.job_folders():
        m = st.job_metrics(jid)
        assert m is not None
        out[jid] = (jid.split("-")[0], m)
    return out


@pytest.mark.slow
def test_metrics_json_records_every_rule_and_the_headline_rule_is_the_tested_one(store: RunStore) -> None:
    for _jid, (paradigm, m) in _rules(store).items():
        assert m.selection is not None and m.selection.rules is not None and m.selection.rules_note is None
        assert set(m.selection.rules) == set(m.tasks)
        for t, tm in m.tasks.items():
            rec = m.selection.rules[t]
            assert rec.metric == tm.primary and rec.last is not None and rec.last.epoch == 5
            assert rec.model is not None and rec.model.epoch == m.selection.epoch  # scope model, mode best
            # the headline's value (results.csv) is the model rule's, tested separately and with every metric
            assert rec.model.test == tm.metrics[tm.primary or ""]
            if paradigm == "TS":  # one task: task scope is model scope
                assert rec.task == rec.model


@pytest.mark.slow
def test_gap_numbers_equal_a_hand_computation_from_metrics_json(store: RunStore) -> None:
    jobs = _rules(store)
    ts = {t: m.selection.rules[t] for p, m in jobs.values() if p == "TS" for t in m.tasks}  # type: ignore[union-attr]
    (au,) = [m for p, m in jobs.values() if p == "AU"]
    groups = {"thyroid_nodule_det": "Thyroid", "fetal_head_biometry": "Fetal", "breast_lesion_cls": "Breast"}
    hand: dict[str, dict[str, float]] = {}
    for t, rec in au.selection.rules.items():  # type: ignore[union-attr]
        s = 1.0 if HIGHER[rec.metric or ""] else -1.0
        d = {}
        for r in SELECTION_RULES:
            a, b = getattr(rec, r).test, getattr(ts[t], r).test
            if a is not None and b is not None and b != 0:
                d[r] = s * (a - b) / abs(b) * 100.0
        if len(d) == 3:
            hand[t] = d
    assert len(hand) == 3 and any(d["task"] != d["model"] for d in hand.values())  # a gap to measure

    inp = load_input(store.root, None)
    a = analyse(inp)
    gap = selection_gap(inp, a.comp)
    (row,) = gap.rows
    assert gap.headline == "model" and row.paradigm == "AU" and set(row.tasks) == set(hand)
    for r in SELECTION_RULES:
        assert row.means[r] == pytest.approx(sum(d[r] for d in hand.values()) / len(hand), abs=1e-12)
    gaps = {t: d["task"] - d["model"] for t, d in hand.items()}
    assert row.gap.mean == pytest.approx(sum(gaps.values()) / len(gaps), abs=1e-12)
    direct = wild_cluster_mean(list(gaps.values()), [groups[t] for t in gaps], 500, 0)
    assert row.gap.ci == direct.ci and row.gap.clusters == len(hand)
    # the headline rule's mean is the headline's Δm over the same tasks
    assert row.means["model"] == pytest.approx(
        sum(a.comp.deltas[(1.0, t, "AU")].value for t in hand) / len(hand),  # type: ignore[misc]
        abs=1e-9,
    )

    # compare: the table in text, the numbers in JSON, the CSV on demand
    from usagg.cli.app import app

    cli = CliRunner()
    text = cli.invoke(app, ["compare", str(store.root)])
    assert text.exit_code == 0, text.output
    assert "Selection gap: Δm versus TS under each selection rule (the headline uses the model scope)" in text.output
    js = cli.invoke(app, ["compare", str(store.root), "--format", "json"])
    data = json.loads(js.output)["selection_gap"]
    assert data["headline"] == "model" and data["rows"][0]["gap"] == pytest.approx(row.gap.mean)
    assert {t: pytest.approx(d) for t, d in data["rows"][0]["task_delta"].items()} == hand
    csv = cli.invoke(app, ["compare", str(store.root), "--format", "csv", "--table", "selection_gap"])
    assert csv.exit_code == 0, csv.output
    (rec,) = list(DictReader(io.StringIO(csv.output)))  # the JSON's names and numbers, the interval's bounds apart
    assert (rec["paradigm"], rec["n_tasks"], float(rec["gap"])) == ("AU", str(len(hand)), data["rows"][0]["gap"])
    assert (float(rec["ci_low"]), float(rec["ci_high"])) == (data["rows"][0]["ci_low"], data["rows"][0]["ci_high"])
    assert float(rec["ci_low"]) <= float(rec["gap"]) <= float(rec["ci_high"])


@pytest.mark.slow
def test_old_and_unmeasured_jobs_say_so_and_every_other_table_stays(store: RunStore, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "runs"
    shutil.copytree(store.root, run)
    st = RunStore(run)
    jobs = _rules(st)
    au = next(j for j, (p, _) in jobs.items() if p == "AU")
    raw = st.metrics(au)
    assert raw is not None
    raw.pop(JSON_CHECKSUM_KEY, None)
    raw["selection"].pop("rules")  # a metrics.json from before the record
    write_json_checked(st.paths(au).metrics, raw)
    assert JobMetrics.model_validate(raw).selection.rules is None  # type: ignore[union-attr]

    inp = load_input(run, None)
    a = analyse(inp)
    (row,) = selection_gap(inp, a.comp).rows
    assert row.tasks == () and row.gap.mean is None and row.status == NOT_RECORDED
    table = gap_table(selection_gap(inp, a.comp))
    assert table.rows[0][-1] == NOT_RECORDED and any("not recorded" in n and "(1 job)" in n for n in table.notes)

    raw["selection"]["rules_note"] = NO_SELECTION_SPLIT  # as a job without a selection split writes it
    write_json_checked(st.paths(au).metrics, raw)
    (row,) = selection_gap(load_input(run, None), a.comp).rows
    assert row.status.startswith("not measured: no selection split")

    # the report keeps every table and says it in the section; an imported table has no metrics.json to read
    from usagg.analysis.report import write_report

    write_report(a, tmp_path / "report", render=lambda *_: [])
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Selection gap" in md and "not measured: no selection split" in md and "To measure it" in md
    assert "## Per-task results" in md and (tmp_path / "report" / "tables" / "selection_gap.csv").is_file()
    imported = load_input(None, st.rebuild_results())
    (row,) = selection_gap(imported, analyse(imported).comp).rows
    assert row.status == NO_STORE


@pytest.mark.slow
def test_a_job_without_a_selection_split_says_not_measured(tmp_path: Path) -> None:
    from usagg.engine.job import run_job
    from usagg.plan import plan
    from usagg.spec.load import load_study

    job = next(j for j in plan(load_study(_study(tmp_path, select=0))) if j.paradigm == "AU")
    job = job.model_copy(update={"training": job.training.model_copy(update={"epochs": 1, "selection": "last"})})
    m = JobMetrics.model_validate(run_job(job, tmp_path / "job", device="cpu"))
    assert m.selection is not None and m.selection.rules is None and m.selection.rules_note == NO_SELECTION_SPLIT
    assert math.isfinite(m.tasks["fetal_head_biometry"].metrics["MRE"] or math.nan)


@pytest.mark.parametrize(
    ("headline", "said"),
    [
        (None, "the headline's selection rule is unknown"),
        ("model", "the headline uses the model scope"),
        ("mixed: model (2 jobs), last (1 job)", "the headline mixes rules (model (2 jobs), last (1 job))"),
    ],
)
def test_the_headline_rule_reads_naturally_known_mixed_or_unknown(
    tmp_path: Path, headline: str | None, said: str
) -> None:
    """An imported table or a simulated store does not say its rule: never 'uses the unknown' or 'uses the an unknown
    rule'."""
    from usagg.analysis.selection_gap import SelectionGap, headline_line
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    run = simulate_run_store(tmp_path / "sim", load_tasks(Path(__file__).parent / "data" / "fmc_uia_tasks.yaml")[:6])
    inp = load_input(run, None)
    gap = selection_gap(inp, analyse(inp).comp)
    assert gap.headline is None  # the simulator's jobs record no rule
    gap = SelectionGap(gap.baseline, gap.scale, gap.rows, headline)
    assert gap_table(gap).title == f"Selection gap: Δm versus TS under each selection rule ({said})"
    line = headline_line(gap)
    assert line is not None and line.endswith(f"; {said}.") and " the unknown" not in line and "the an " not in line


@pytest.mark.parametrize(
    ("unsplit", "said"),
    [
        ("every", "uses the last epoch: its jobs had no selection split (data.selection_fraction 0), so none "
                  "ranked an epoch."),
        ("none", "uses the last epoch (training.selection: last)."),
        ("one", "uses the last epoch (training.selection: last; 1 of its 2 jobs had no selection split to rank "
                "epochs)."),
    ],
)  # fmt: skip
def test_a_last_epoch_headline_says_why_its_jobs_tested_the_last_epoch(tmp_path: Path, unsplit: str, said: str) -> None:
    """Under `training.selection: best` a job without a selection split tests its last epoch and its metrics.json
    says why (`selection.rules_note`): the note names that cause, not `training.selection: last`, which the spec
    did not say."""
    from usagg.analysis.simulate import load_tasks, simulate_run_store

    tasks = load_tasks(Path(__file__).parent / "data" / "fmc_uia_tasks.yaml")[:6]
    run = simulate_run_store(tmp_path / "sim", tasks, paradigms=("TS", "AU"), seeds=(0, 1))
    store, rows = RunStore(run), load_input(run, None).table.rows
    au = sorted({r.job_id for r in rows if r.paradigm == "AU"})
    assert len(au) == 2  # AU at two seeds: the jobs the headline rule is read from
    for k, jid in enumerate(sorted({r.job_id for r in rows})):
        raw = store.metrics(jid)
        assert raw is not None
        raw.pop(JSON_CHECKSUM_KEY, None)
        no_split = unsplit == "every" or (unsplit == "one" and jid == au[0]) or (jid not in au and k % 2 == 0)
        raw["selection"] = {"mode": "last", **({"rules_note": NO_SELECTION_SPLIT} if no_split else {})}
        write_json_checked(store.paths(jid).metrics, raw)
    inp = load_input(run, None)
    gap = selection_gap(inp, analyse(inp).comp)
    assert gap.headline == "last" and gap.unsplit == {"every": (2, 2), "none": (0, 2), "one": (1, 2)}[unsplit]
    assert gap.notes[0] == f"The study's headline Δ (every other table) {said}"
    assert "the headline uses the last epoch" in gap_table(gap).title

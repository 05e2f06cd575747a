"""Issue 27.3: metrics.json is a typed JobMetrics (usagg/jobmetrics.py) that run_job builds and every reader checks:
a real job's file round-trips byte for byte, older and simulated layouts still read, a malformed file is named
(file and field) by the store, the analysis and load_history, and docs/metrics.md is what the models generate."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.store_reads import all_metrics
from tests.tiny_study import BIOMETRY, MALIGNANCY, write_tiny_study
from usagg.analysis.inputs import load_input
from usagg.analysis.simulate import simulate_run_store
from usagg.api import load_history
from usagg.atomic import JSON_CHECKSUM_KEY, write_json_checked
from usagg.errors import DataError, UsaggError
from usagg.jobmetrics import JobMetrics, metrics_problem
from usagg.jobmetrics_doc import COMMAND, metrics_markdown
from usagg.spec.reference import _models
from usagg.store import RunStore

DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"

#: The top-level keys, in the order the engine wrote them before JobMetrics existed (the JSON layout).
LAYOUT = ["job_id", "tasks", "expert_usage", "weights", "params", "selection", "history", "training", "throughput"]


@pytest.mark.slow  # trains a real tiny job through the runner
def test_a_real_jobs_metrics_round_trip_and_a_malformed_one_is_named_everywhere(tmp_path: Path) -> None:
    from usagg.engine.runner import run_one
    from usagg.plan import plan
    from usagg.spec.load import dump_study, load_study

    spec = write_tiny_study(
        tmp_path / "study.yaml",
        "job-metrics",
        tmp_path,
        paradigms=("AU",),
        tasks=(MALIGNANCY, BIOMETRY),
        epochs=2,
        steps=2,
        synthetic={"default_size": 12},
        model={"moe": {"experts": 4}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
    )
    study = load_study(spec)
    (job,) = plan(study)
    store = RunStore(tmp_path / "runs")
    store.init(dump_study(study), [job])
    assert run_one(str(store.root), job.id, device="cpu") == "done", store.error_text(job.id)
    assert re.fullmatch(r"cpu \(\d+ threads?\)", store.job_record(job.id)["device"])  # `usagg status` shows it

    path = store.paths(job.id).metrics
    original = path.read_bytes()
    raw = json.loads(original)
    raw.pop(JSON_CHECKSUM_KEY)
    assert list(raw) == LAYOUT
    m = store.job_metrics(job.id)
    assert m is not None and m.job_id == job.id and list(m.tasks) == job.task_ids
    reg = m.tasks["fetal_head_biometry"]
    assert reg.type == "regression" and reg.primary == "MRE" and isinstance(reg.metrics["MRE"], float)
    assert (
        reg.n_train == 9  # 12 images, a quarter of them held out for selection
        and reg.n_test == 6
        and reg.steps == sum(h.task_steps.get("fetal_head_biometry", 0) for h in m.history)
    )
    assert [h.epoch for h in m.history] == [1, 2] and m.training.steps == m.history[-1].step == 4
    assert m.selection.mode == "best" and m.selection.scope == "model" and m.selection.epoch in (1, 2)
    assert m.expert_usage is not None and len(m.expert_usage["thyroid_malignancy"]) == 2  # 2 MoE blocks
    assert m.weights.random_init is True and m.params["moe"] > 0 and m.throughput.wall_seconds > 0
    # where the time between epochs went: 2 epochs under checkpoint_every auto write last.pt after epoch 1 and 2
    # and best.pt once; the selection split is scored after each epoch, the first epoch's weights kept at least
    t = m.throughput
    assert t.checkpoint_saves == 3 and t.checkpoint_seconds > 0 and t.selection_seconds > 0 and t.keep_seconds > 0
    assert t.rule_test_seconds is not None and t.rule_test_seconds > 0
    assert t.epoch_end_seconds >= t.selection_seconds + t.rule_test_seconds + t.checkpoint_seconds - 0.003
    assert t.wall_seconds > t.train_seconds + t.epoch_end_seconds
    # the second epoch's rate (the first holds the warm-up): its half of the images in less than all the training
    images = t.train_images_per_s * t.train_seconds
    assert t.later_images_per_s is not None and 0 < images / 2 / t.later_images_per_s < t.train_seconds
    # the model writes back exactly the file the job wrote: same keys, order, numbers and checksum
    again = write_json_checked(tmp_path / "again.json", m.to_json())
    assert again.read_bytes() == original
    assert m.to_json() == store.metrics(job.id) == raw

    # a malformed value under a valid checksum (as a buggy writer or another tool would leave it)
    raw["tasks"]["fetal_head_biometry"]["n_train"] = "12"
    write_json_checked(path, raw)
    assert store.metrics(job.id) is None
    assert (
        f"{path} is damaged (not a metrics.json this usagg reads: tasks.fetal_head_biometry.n_train"
        in (store.repairs[-1])
    )
    with pytest.raises(DataError, match=r"metrics\.json is damaged .*tasks\.fetal_head_biometry\.n_train: .*'12'"):
        store.job_metrics(job.id)
    with pytest.raises(DataError, match=r"tasks\.fetal_head_biometry\.n_train"):
        load_history(store.root)
    with pytest.raises(UsaggError, match=r"is done but .*metrics\.json is damaged \(not a metrics\.json"):
        store.rebuild_results()
    made = store.repair()
    assert any("metrics.json was damaged" in n for n in made) and store.job_state(job.id) == "pending"
    damaged = json.loads((path.parent / "metrics.json.damaged").read_text())
    assert damaged["tasks"]["fetal_head_biometry"]["n_train"] == "12"  # nothing written is lost


def test_older_and_simulated_layouts_read_and_keep_their_extra_keys(tmp_path: Path) -> None:
    """Files written before JobMetrics: a minimal one, one with keys it does not know (kept as they are), and the
    simulated store's (no primary, no training, histories without losses)."""
    for minimal in ({"job_id": "TS-a-f1-s0", "tasks": {}}, {"tasks": {}}):  # the second: tests' done-job marker
        assert JobMetrics.parse(minimal, "m.json").to_json() == minimal
    older = {
        "job_id": "AU-all-f1-s0",
        "tasks": {"a": {"type": "segmentation", "primary": "DSC", "metrics": {"DSC": 0.8, "HD": None}, "n_train": 3}},
        "model_config": {"backbone": "dinov3_vits16", "image_size": 224},  # a key older engines wrote
        "history": [{"epoch": 1, "step": 2, "loss": 1, "lr": 0.001}],  # an int loss and an extra key
        "selection": {"mode": "last", "epoch": 1},
        "training": {"epochs": 1, "loss_balance": {"mode": "equal", "extra": [1]}},
    }
    m = JobMetrics.parse(older, "older.json")
    assert m.to_json()["model_config"] == older["model_config"] and m.history[0].loss == 1.0
    assert m.to_json()["history"][0]["lr"] == 0.001 and m.training.loss_balance.mode == "equal"
    assert list(m.to_json()) == ["job_id", "tasks", "selection", "history", "training", "model_config"]  # field order
    run = simulate_run_store(
        tmp_path / "sim", [{"id": "a", "type": "segmentation", "num_classes": 2, "group": "G"}], seeds=(0,)
    )
    store = RunStore(run)
    assert all_metrics(store) and not store.repairs
    for jid in all_metrics(store):
        assert store.job_metrics(jid).tasks["a"].type == "segmentation"


@pytest.mark.parametrize(
    ("edit", "field", "expected"),
    [
        (lambda m: m["tasks"]["a"]["metrics"].update(DSC="0.8"), "tasks.a.metrics.DSC", "a valid number"),
        (lambda m: m["tasks"]["a"].pop("type"), "tasks.a.type", "Field required"),
        (lambda m: m.update(history=[{"epoch": 0}]), "history.0.epoch", "greater than or equal to 1"),
        (lambda m: m.update(expert_usage={"a": [[1.5, 2]]}), "expert_usage.a.0.0", "a valid integer"),
        (lambda m: m["tasks"]["a"].update(n_train=True), "tasks.a.n_train", "a valid integer"),
        (lambda m: m.pop("tasks"), "tasks", "Field required"),
        (lambda m: m.update(job_id=7), "job_id", "a valid string"),
    ],
)
def test_a_malformed_file_is_named_by_field_and_stops_the_analysis(
    tmp_path: Path, edit: Callable[[dict], object], field: str, expected: str
) -> None:
    run = simulate_run_store(
        tmp_path / "sim", [{"id": "a", "type": "segmentation", "num_classes": 2, "group": "G"}], seeds=(0,)
    )
    store = RunStore(run)
    jid = next(iter(all_metrics(store)))
    m = store.metrics(jid)
    edit(m)
    assert metrics_problem(m) is not None and metrics_problem(m).startswith(
        f"not a metrics.json this usagg reads: {field}: "
    )
    write_json_checked(store.paths(jid).metrics, m)
    with pytest.raises(DataError, match=rf"{store.paths(jid).metrics} is damaged .*{field}: .*{expected}"):
        load_input(run, None)
    assert store.metrics(jid) is None and field in store.repairs[-1]


def test_metrics_doc_is_what_the_models_generate() -> None:
    assert DOC.read_text() == metrics_markdown(), f"regenerate: {COMMAND}"


def test_every_metrics_field_is_documented() -> None:
    models = _models(JobMetrics)
    assert len(models) == 10  # with RuleChoice and TaskRules (selection.rules)
    for model in models:
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"
            assert f"| `{name}` |" in DOC.read_text()


def test_the_spec_settings_metrics_md_names_exist() -> None:
    """Audit docs 10: docs/metrics.md told a user to hold `training.threads` equal, which reads as a spec setting and
    is none (the spec's is `execution.threads`; metrics.json records it as `training.threads`). A setting the text
    names as the spec's is one."""
    from usagg.spec.models import Study

    named = re.findall(r"`([a-z_]+)\.([a-z_]+)` of the spec", metrics_markdown())
    assert named == [("execution", "threads")]
    for section, key in named:
        assert key in Study.model_fields[section].annotation.model_fields, (section, key)

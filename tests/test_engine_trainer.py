"""The engine on real tiny jobs (synthetic data, dinov3_test at 32 px): determinism, resume, selection, guards."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from usagg.engine import checkpoint
from usagg.engine.batches import TensorSplit
from usagg.engine.device import resolve_compute, seed_everything
from usagg.engine.evaluate import EvalSet
from usagg.engine.job import run_job
from usagg.engine.jobdata import load_job_data
from usagg.engine.trainer import NonFiniteLoss, Trainer
from usagg.model.m2dino import build_model
from usagg.plan import Job, plan
from usagg.spec.load import load_study

pytestmark = pytest.mark.slow  # trains real tiny jobs

STUDY = """
name: engine-test
paradigms: [TS, AU]
data:
  synthetic: {{seed: 0, image_size: 48, default_size: 16, val_size: 6, out: {out}}}
  selection_fraction: 0.25
  cache_dir: {cache}
tasks:
  - {{id: thyroid_malignancy, type: classification, num_classes: 2, group: Thyroid}}
  - {{id: thyroid_nodule_det, type: detection, num_classes: 1, group: Thyroid}}
model: {{backbone: dinov3_test, image_size: 32, moe: {{experts: 4}}, heads: {{hidden: 32}}}}
training: {{epochs: 3, steps_per_epoch: 2, batch_size: 6, eval_batch_size: 16, warmup_epochs: 0.5}}
"""


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    d = tmp_path_factory.mktemp("engine")
    spec = d / "study.yaml"
    spec.write_text(STUDY.format(out=d / "synth", cache=d / "cache"))
    return {j.paradigm + ("-" + j.name if j.paradigm == "TS" else ""): j for j in plan(load_study(spec))}


def _trainer(job: Job, ckpt_dir: Path) -> Trainer:
    dev = torch.device("cpu")
    seed_everything(job.seed, dev)
    data = load_job_data(job)
    model = build_model(job.model, job.tasks, job.moe)
    train = {t: TensorSplit.from_dataset(ds) for t, ds in data.train.items()}
    select = {t.id: EvalSet(t, data.select[t.id], TensorSplit.from_dataset(data.select[t.id])) for t in job.tasks}
    return Trainer(model, train, select, job.tasks, job.training, resolve_compute("fp32", dev), job.seed, ckpt_dir)


def _reproducible(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "throughput"}


def test_same_seed_gives_identical_metrics(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = jobs["AU"]
    job = job.model_copy(update={"training": job.training.model_copy(update={"epochs": 2})})
    a = run_job(job, tmp_path / "a", "cpu")
    b = run_job(job, tmp_path / "b", "cpu")
    assert _reproducible(a) == _reproducible(b)
    assert a["expert_usage"] is not None and set(a["expert_usage"]) == {"thyroid_malignancy", "thyroid_nodule_det"}
    usage = torch.tensor(a["expert_usage"]["thyroid_nodule_det"])
    assert usage.shape == (2, 4)  # 2 MoE blocks (the later half of 4) x 4 experts
    n_test, tokens = a["tasks"]["thyroid_nodule_det"]["n_test"], 4 + 2 * 2  # 2x2 patches + cls + 4 registers
    assert int(usage.sum()) == 2 * n_test * (tokens + 1) * 2  # blocks x images x tokens x top_k
    assert a["selection"]["mode"] == "best" and 1 <= a["selection"]["epoch"] <= 2
    assert [h["epoch"] for h in a["history"]] == [1, 2] and a["training"]["steps"] == 4
    assert a["tasks"]["thyroid_malignancy"]["n_train"] == 12 and a["tasks"]["thyroid_malignancy"]["n_test"] == 6
    assert (tmp_path / "a" / "predictions" / "detection_predictions.json").is_file()
    assert (tmp_path / "a" / "splits.json").is_file()


def test_resume_from_last_checkpoint_gives_the_same_final_weights(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = jobs["AU"]
    straight = _trainer(job, tmp_path / "straight")
    fit_a = straight.fit()

    first = _trainer(job, tmp_path / "resumed")
    stopped = first.fit(stop_after_epoch=1)
    assert stopped.selection == "stopped" and checkpoint.load(first.last_path)["epoch"] == 1
    torch.manual_seed(12345)  # a different process state: the checkpoint must restore it
    random.seed(1)
    np.random.seed(1)
    second = _trainer(job, tmp_path / "resumed")
    fit_b = second.fit()

    assert fit_b.steps == fit_a.steps == 6 and fit_b.selected_epoch == fit_a.selected_epoch
    assert fit_b.history == fit_a.history
    for h in fit_a.history:  # two tasks: the total is a mean of each task's own + auxiliary loss, so between them
        own, aux = h["task_loss"], h["task_aux_loss"]
        assert own and set(own) == set(aux) <= {"thyroid_malignancy", "thyroid_nodule_det"}
        assert all(a > 0 for a in aux.values())  # a MoE model: the balance loss is there
        optimised = [own[t] + aux[t] for t in own]
        assert min(optimised) - 1e-12 <= h["loss"] <= max(optimised) + 1e-12
    sa, sb = straight.model.state_dict(), second.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    last_a = checkpoint.load(straight.last_path)["optimizer"]["state"]
    last_b = checkpoint.load(second.last_path)["optimizer"]["state"]
    assert all(torch.equal(last_a[i]["exp_avg"], last_b[i]["exp_avg"]) for i in last_a)


def test_selection_last_without_selection_split(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = jobs["TS-thyroid_malignancy"]
    t = _trainer(job, tmp_path / "ck")
    t.select = {}
    fit = t.fit()
    assert fit.selection == "last" and fit.selected_epoch == 3 and not t.best_path.exists()
    assert all("select_score" not in h for h in fit.history)


def test_best_checkpoint_is_the_best_selection_epoch(jobs: dict[str, Job], tmp_path: Path) -> None:
    t = _trainer(jobs["TS-thyroid_nodule_det"], tmp_path / "ck")
    fit = t.fit()
    scores = [h["select_score"] for h in fit.history]
    # one task without MoE: its own mean loss is the epoch's total mean loss, to the bit
    assert [h["task_loss"] for h in fit.history] == [{"thyroid_nodule_det": h["loss"]} for h in fit.history]
    assert all("task_aux_loss" not in h for h in fit.history)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # first epoch reaching the maximum
    assert fit.selected_epoch == best + 1 and fit.best_score == pytest.approx(scores[best])
    assert checkpoint.load(t.best_path)["epoch"] == best + 1


def test_one_task_moe_loss_is_its_own_loss_plus_the_auxiliary_loss(jobs: dict[str, Job], tmp_path: Path) -> None:
    au = jobs["AU"]
    job = au.model_copy(update={"tasks": au.tasks[:1], "training": au.training.model_copy(update={"epochs": 2})})
    fit = _trainer(job, tmp_path / "ck").fit()
    (task,) = job.task_ids
    for h in fit.history:
        assert set(h["task_loss"]) == set(h["task_aux_loss"]) == {task} and h["task_aux_loss"][task] > 0
        assert h["loss"] == pytest.approx(h["task_loss"][task] + h["task_aux_loss"][task], rel=1e-12, abs=0)


def test_non_finite_loss_fails_with_a_clear_error(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = jobs["TS-thyroid_malignancy"]
    training = job.training.model_copy(update={"loss_weights": {"thyroid_malignancy": math.inf}})
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss \(inf\) at epoch 1, step 1 \(task thyroid_malignancy\)"):
        _trainer(job.model_copy(update={"training": training}), tmp_path / "ck").fit()

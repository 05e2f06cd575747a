"""The lookahead affinity on a tiny real model: no effect on the training it watches, the same numbers after a
resume, the file a job writes. Each lookahead step against a hand computation: tests/test_lookahead.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_engine_trainer import _trainer as engine_trainer

from tests.tiny_study import FETAL_HEAD, THYROID_PAIR, write_tiny_study
from usagg.affinity import read_affinity
from usagg.engine.affinity import LookaheadAffinity, probe_rows
from usagg.engine.job import run_job
from usagg.engine.trainer import Trainer
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import AffinitySpec

pytestmark = pytest.mark.slow  # trains real tiny jobs


@pytest.fixture(scope="module")
def au(tmp_path_factory: pytest.TempPathFactory) -> Job:
    d = tmp_path_factory.mktemp("affinity")
    spec = write_tiny_study(
        d / "study.yaml",
        "affinity-test",
        d,
        paradigms=("TS", "AU", "AG"),
        tasks=(*THYROID_PAIR, FETAL_HEAD),
        epochs=3,
        steps=2,
        model={"moe": {"experts": 4}, "heads": {"hidden": 32, "decoder_channels": 8}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
        extra={"analysis": {"affinity": {"every": 2, "probe_size": 3}}},
    )
    (job,) = [j for j in plan(load_study(spec)) if j.paradigm == "AU"]
    assert job.affinity is not None and job.affinity.every == 2
    return job


def _trainer(job: Job, ckpt_dir: Path) -> Trainer:
    """The job's Trainer as run_job wires it (build_trainer: the job's affinity and hash included), on the CPU."""
    return engine_trainer(job, ckpt_dir)


def test_measuring_leaves_the_training_bit_identical(au: Job, tmp_path: Path) -> None:
    plain = _trainer(au.model_copy(update={"affinity": None}), tmp_path / "plain")
    watched = _trainer(au, tmp_path / "watched")
    fit_a, fit_b = plain.fit(), watched.fit()
    assert fit_a.history == fit_b.history
    for (k, a), b in zip(plain.model.state_dict().items(), watched.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert watched.affinity is not None and watched.affinity.steps == [2, 4, 6]


def test_a_resumed_job_measures_the_same_affinity(au: Job, tmp_path: Path) -> None:
    straight = _trainer(au, tmp_path / "a")
    straight.fit()
    first = _trainer(au, tmp_path / "b")
    first.fit(stop_after_epoch=1)
    second = _trainer(au, tmp_path / "b")
    second.fit()
    assert straight.affinity is not None and second.affinity is not None
    a, b = straight.affinity.record(1.0), second.affinity.record(1.0)
    assert a.matrix == b.matrix and a.steps == b.steps == [2, 4, 6]


def test_a_job_writes_its_affinity_file(au: Job, tmp_path: Path) -> None:
    metrics = run_job(au.model_copy(update={"training": au.training.model_copy(update={"epochs": 1})}), tmp_path, "cpu")
    aff = read_affinity(tmp_path / "affinity.json")
    assert aff.tasks == au.task_ids and aff.job_id == au.id and aff.job_hash == au.hash and aff.steps == [2]
    assert aff.probe_size == {t: 3 for t in au.task_ids} and aff.seconds > 0 and 0 < aff.share < 1
    assert aff.train_seconds == pytest.approx(metrics["throughput"]["train_seconds"], abs=1e-3)
    # a real change of the losses: SGD's step in warm-up moves them ~1e-5, float32 rounding ~1e-7
    assert any(abs(v) > 1e-6 for row in aff.matrix for v in row)


def test_probe_rows_are_fixed_and_within_the_split() -> None:
    (a, step), (b, again) = probe_rows(10, 4, 7), probe_rows(10, 4, 7)
    assert torch.equal(a, b) and torch.equal(step, again) and len(a) == len(step) == 4 and int(a.max()) < 10
    assert not set(a.tolist()) & set(step.tolist()) and len(set(a.tolist())) == 4  # held apart
    probe, step = probe_rows(5, 4, 7)  # fewer than 2 x 4 rows: halved, still disjoint
    assert (len(probe), len(step)) == (3, 2) and not set(probe.tolist()) & set(step.tolist())
    assert [len(r) for r in probe_rows(1, 4, 7)] == [1, 1]


def test_auto_every_spreads_five_measurements(au: Job, tmp_path: Path) -> None:
    job = au.model_copy(update={"affinity": AffinitySpec(), "training": au.training.model_copy(update={"epochs": 3})})
    tr = _trainer(job, tmp_path / "ck")
    assert isinstance(tr.affinity, LookaheadAffinity) and tr.affinity.every == 1  # 6 steps: at least every step

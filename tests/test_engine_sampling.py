"""Task sampler and learning-rate schedule: frequencies, batch contents, resumable state, key schedule values."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from usagg.engine.sampling import TaskSampler, epoch_length, matched_steps, task_probabilities
from usagg.engine.schedule import WarmupCosine, build_scheduler

SIZES = {"a": 900, "b": 90, "c": 10}


def test_probabilities_by_mode() -> None:
    assert task_probabilities(SIZES, "uniform") == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert task_probabilities(SIZES, "proportional") == pytest.approx({"a": 0.9, "b": 0.09, "c": 0.01})
    # T = 2: sqrt sizes 30, sqrt(90) = 9.4868, sqrt(10) = 3.1623 -> normalised
    root = {t: math.sqrt(n) for t, n in SIZES.items()}
    total = sum(root.values())
    assert task_probabilities(SIZES, "temperature", 2.0) == pytest.approx({t: v / total for t, v in root.items()})
    assert task_probabilities(SIZES, "temperature", 1.0) == pytest.approx(task_probabilities(SIZES, "proportional"))
    with pytest.raises(ValueError, match="without training images"):
        task_probabilities({"a": 3, "b": 0}, "uniform")


@pytest.mark.parametrize("mode", ["uniform", "proportional", "temperature"])
def test_task_frequencies_match_probabilities(mode: str) -> None:
    n = 20000
    sampler = TaskSampler(SIZES, batch_size=4, mode=mode, temperature=2.0, seed=123)
    counts = Counter(sampler.next_task() for _ in range(n))
    for task, p in sampler.probs.items():
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[task] - n * p) < 5 * sd + 1, (task, counts[task], n * p)
    # the fixed seed pins the exact draw: same seed, same sequence
    again = TaskSampler(SIZES, batch_size=4, mode=mode, temperature=2.0, seed=123)
    assert Counter(again.next_task() for _ in range(n)) == counts


def test_batches_cover_each_task_once_per_pass_and_cap_at_size() -> None:
    sampler = TaskSampler({"x": 10, "tiny": 3}, batch_size=4, seed=0)
    seen = torch.cat([sampler.take("x") for _ in range(5)])  # 20 indices = two full passes over 10
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert len(sampler.take("tiny")) == 3  # a task smaller than the batch gives what it has


def test_state_dict_resumes_the_same_batches() -> None:
    a = TaskSampler(SIZES, batch_size=8, mode="temperature", seed=7)
    for _ in range(13):
        a.next_batch()
    b = TaskSampler(SIZES, batch_size=8, mode="temperature", seed=999)
    b.load_state_dict(a.state_dict())
    for _ in range(50):
        (ta, ia), (tb, ib) = a.next_batch(), b.next_batch()
        assert ta == tb and torch.equal(ia, ib)


def test_matched_epochs_hold_each_task_its_ts_steps() -> None:
    # TS steps per epoch: ceil(900 / 32) = 29, ceil(90 / 32) = 3, ceil(10 / 32) = 1
    assert matched_steps(SIZES, 32) == {"a": 29, "b": 3, "c": 1}
    assert matched_steps(SIZES, 32, steps_per_epoch=5) == {"a": 5, "b": 5, "c": 5}
    assert epoch_length(SIZES, 32, "matched", None) == 33 and epoch_length(SIZES, 32, "uniform", None) == 32
    assert epoch_length(SIZES, 32, "matched", 5) == 15 and epoch_length(SIZES, 32, "uniform", 5) == 5
    sampler = TaskSampler(SIZES, batch_size=32, mode="matched", seed=3)
    assert sampler.steps_per_epoch == 33 and sampler.probs == pytest.approx({"a": 29 / 33, "b": 3 / 33, "c": 1 / 33})
    epochs = [[sampler.next_task() for _ in range(33)] for _ in range(3)]
    for e in epochs:
        assert Counter(e) == {"a": 29, "b": 3, "c": 1}
    assert epochs[0] != epochs[1]  # a fresh seeded shuffle per epoch
    again = TaskSampler(SIZES, batch_size=32, mode="matched", seed=3)
    assert [again.next_task() for _ in range(99)] == [t for e in epochs for t in e]


def test_matched_state_resumes_mid_epoch() -> None:
    a = TaskSampler(SIZES, batch_size=32, mode="matched", seed=7)
    for _ in range(20):
        a.next_batch()
    b = TaskSampler(SIZES, batch_size=32, mode="matched", seed=999)
    b.load_state_dict(a.state_dict())
    for _ in range(50):
        (ta, ia), (tb, ib) = a.next_batch(), b.next_batch()
        assert ta == tb and torch.equal(ia, ib)


@pytest.mark.parametrize("mode", ["proportional", "temperature", "matched"])
def test_one_task_draws_the_same_batches_in_every_mode(mode: str) -> None:
    base = TaskSampler({"x": 50}, batch_size=8, seed=4)
    other = TaskSampler({"x": 50}, batch_size=8, mode=mode, seed=4)
    assert other.mode == "uniform" and other.steps_per_epoch == base.steps_per_epoch == 7
    for _ in range(20):
        assert torch.equal(base.next_batch()[1], other.next_batch()[1])


def test_warmup_cosine_key_steps() -> None:
    f = WarmupCosine(total_steps=110, warmup_steps=10)
    assert f(0) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)  # cosine starts at the full rate
    assert f(60) == pytest.approx(0.5)  # half-way through the cosine
    assert f(110) == pytest.approx(0.0, abs=1e-12)
    assert f(109) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert [WarmupCosine(50, 0, "constant")(s) for s in (0, 25, 49)] == [1.0, 1.0, 1.0]
    assert WarmupCosine(10, 0)(0) == 1.0  # no warm-up: first step at the full rate


def test_scheduler_sets_both_learning_rates_and_saves_state() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    h = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [w], "lr": 1e-4}, {"params": [h], "lr": 1e-3}])
    sched = build_scheduler(opt, total_steps=20, warmup_steps=4, kind="cosine")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25e-4, 0.25e-3])  # step 0 of the warm-up
    for _ in range(3):
        opt.step()
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-3])  # step 3: warm-up done
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([{"params": [w], "lr": 1e-4}, {"params": [h], "lr": 1e-3}])
    sched2 = build_scheduler(opt2, total_steps=20, warmup_steps=4, kind="cosine")
    sched2.load_state_dict(state)
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]

"""The engine on real tiny jobs (synthetic data, dinov3_test at 32 px): determinism, resume, selection, guards."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_study import write_tiny_study
from usagg.engine import checkpoint
from usagg.engine.balance import build_balance
from usagg.engine.callbacks import BatchEnd, Callback
from usagg.engine.device import resolve_compute, seed_everything
from usagg.engine.job import build_trainer, run_job
from usagg.engine.jobdata import load_job_data
from usagg.engine.trainer import NonFiniteLoss, Trainer
from usagg.model.m2dino import build_model
from usagg.plan import Job, plan
from usagg.spec.load import load_study

pytestmark = pytest.mark.slow  # trains real tiny jobs
CPU = torch.device("cpu")


def _study(path: Path, steps: int | None = 2, synthetic: dict[str, object] | None = None) -> Path:
    """The engine's study (TS and AU on the Thyroid pair, MoE) in PATH, its data beside it."""
    return write_tiny_study(
        path,
        "engine-test",
        path.parent,
        paradigms=("TS", "AU"),
        epochs=3,
        steps=steps,
        synthetic=synthetic,
        model={"moe": {"experts": 4}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
    )


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    d = tmp_path_factory.mktemp("engine")
    spec = _study(d / "study.yaml")
    return {j.paradigm + ("-" + j.name if j.paradigm == "TS" else ""): j for j in plan(load_study(spec))}


def _with(job: Job, **training: object) -> Job:
    return job.model_copy(update={"training": job.training.model_copy(update=training)})


def _trainer(job: Job, ckpt_dir: Path, model_seed: int | None = None) -> Trainer:
    """A Trainer as run_job builds it, on the CPU in fp32 without augmentation or trunk; `model_seed`: another
    initialisation (other frozen weights)."""
    seed_everything(job.seed, CPU)
    data = load_job_data(job)
    model = None
    if model_seed is not None:
        torch.manual_seed(model_seed)
        model = build_model(job.model, job.tasks, job.moe)
    return build_trainer(job, ckpt_dir, resolve_compute("fp32", CPU), data=data, model=model)


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
    probe = _trainer(job, tmp_path / "resumed")
    assert probe.resume()  # nothing in training draws on the global generators yet, so only this can see it:
    saved = checkpoint.load(first.last_path)["rng"]  # a later dropout or drop-path would
    assert torch.equal(torch.get_rng_state(), saved["torch"]) and random.getstate()[1] == tuple(saved["python"][1])
    second = _trainer(job, tmp_path / "resumed")
    fit_b = second.fit()

    assert fit_b.steps == fit_a.steps == 6 and fit_b.selected_epoch == fit_a.selected_epoch
    # speed per epoch of this run only: the resumed run trained the epochs after the first; the rate after a run's
    # first epoch (which holds its warm-up) is theirs
    epochs = job.training.epochs
    assert len(straight.epoch_speed) == epochs and sum(n for n, _ in straight.epoch_speed) == fit_a.train_images
    assert len(second.epoch_speed) == epochs - 1
    later = straight.epoch_speed[1:]
    assert straight.later_images_per_s == pytest.approx(sum(n for n, _ in later) / sum(t for _, t in later))
    assert first.later_images_per_s is None  # one epoch in that run
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
    losses = [h["select_loss"]["thyroid_nodule_det"] for h in fit.history]
    ious = [h["select"]["thyroid_nodule_det"]["IoU"] for h in fit.history]
    # one task without MoE: its own mean loss is the epoch's total mean loss, to the bit
    assert [h["task_loss"] for h in fit.history] == [{"thyroid_nodule_det": h["loss"]} for h in fit.history]
    assert all("task_aux_loss" not in h for h in fit.history)
    # selection computes the primary metric only; the score is its relative change versus epoch 1
    assert all(set(h["select"]["thyroid_nodule_det"]) == {"IoU"} for h in fit.history)
    assert scores == pytest.approx([(v - ious[0]) / max(ious[0], 0.05) for v in ious])
    assert all(v > 0 for v in losses)
    best = max(range(len(scores)), key=lambda i: (scores[i], -losses[i], i))  # then lower loss, then later
    assert fit.selected_epoch == best + 1 and fit.best_score == pytest.approx(scores[best])
    assert fit.task_epochs == {"thyroid_nodule_det": best + 1}
    best_ck = checkpoint.load(t.best_path)
    assert list(best_ck["weights"]) == [best + 1]  # superseded epochs are dropped
    state = t.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in best_ck["weights"][best + 1].items())


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


@pytest.fixture(scope="module")
def uneven(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    """30 + 12 training images, steps per epoch from the data (batch 6)."""
    d = tmp_path_factory.mktemp("uneven")
    spec = _study(d / "study.yaml", steps=None, synthetic={"sizes": {"thyroid_malignancy": 40}})
    return {j.paradigm + ("-" + j.name if j.paradigm == "TS" else ""): j for j in plan(load_study(spec))}


def test_matched_sampling_gives_every_task_its_ts_steps(uneven: dict[str, Job], tmp_path: Path) -> None:
    au = _with(uneven["AU"], sampling="matched", epochs=2)
    ts_steps = {t: 2 * _trainer(_with(uneven[f"TS-{t}"], epochs=2), tmp_path / t).steps_per_epoch for t in au.task_ids}
    assert ts_steps == {"thyroid_malignancy": 10, "thyroid_nodule_det": 4}  # ceil(30 / 6), ceil(12 / 6) per epoch
    m = run_job(au, tmp_path / "au", "cpu")
    assert {t: m["tasks"][t]["steps"] for t in au.task_ids} == ts_steps
    assert [h["task_steps"] for h in m["history"]] == [{"thyroid_malignancy": 5, "thyroid_nodule_det": 2}] * 2
    assert m["training"]["steps"] == 14 and m["training"]["sampling"] == "matched"
    # with steps_per_epoch set, every task gets that many per epoch
    t = _trainer(_with(au, steps_per_epoch=3), tmp_path / "fixed")
    assert t.steps_per_epoch == 6
    drawn = [t.sampler.next_task() for _ in range(12)]
    assert drawn[:6].count("thyroid_nodule_det") == drawn[6:].count("thyroid_nodule_det") == 3
    # uniform (the default) records what it drew: the same total, any split
    u = run_job(_with(uneven["AU"], epochs=1), tmp_path / "uniform", "cpu")
    assert sum(u["tasks"][t]["steps"] for t in au.task_ids) == u["training"]["steps"] == 7


def test_resume_with_checkpoint_every_2_killed_midway(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = _with(
        jobs["AU"],
        epochs=4,
        checkpoint_every=2,
        sampling="matched",
        loss_balance="uncertainty",
        selection_scope="task",
    )
    straight = _trainer(job, tmp_path / "straight")
    fit_a = straight.fit()
    first = _trainer(job, tmp_path / "resumed")
    first.fit(stop_after_epoch=3)  # killed after epoch 3: its checkpoint is that of epoch 2
    assert checkpoint.load(first.last_path)["epoch"] == 2
    torch.manual_seed(12345)
    random.seed(1)
    np.random.seed(1)
    second = _trainer(job, tmp_path / "resumed")
    fit_b = second.fit()
    assert fit_b.history == fit_a.history and fit_b.steps == fit_a.steps == 16
    assert fit_a.scope == "task" and fit_a.selected_epoch is None
    assert fit_b.task_epochs == fit_a.task_epochs and set(fit_a.task_epochs) == set(job.task_ids)
    for epoch, _ in fit_a.test_groups():
        straight.use_weights(epoch)
        second.use_weights(epoch)
        sa, sb = straight.model.state_dict(), second.model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    la, lb = straight.balance.record(), second.balance.record()
    assert la == lb and la["mode"] == "uncertainty" and all(s != 0.0 for s in la["log_vars"].values())
    best = checkpoint.load(second.best_path)["weights"]
    assert set(best) == set(fit_a.task_epochs.values())  # only the selected epochs are kept


def test_lean_checkpoints_hold_no_frozen_weights(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = _with(jobs["TS-thyroid_malignancy"], epochs=1)
    job = job.model_copy(update={"model": job.model.model_copy(update={"frozen_blocks": 3})})
    t = _trainer(job, tmp_path / "ck")
    t.fit()
    last, best = checkpoint.load(t.last_path), checkpoint.load(t.best_path)
    full = t.model.state_dict()
    frozen = set(full) - set(last["model"])
    assert "encoder.vit.blocks.0.attn.qkv.weight" in frozen and "encoder.vit.patch_embed.proj.weight" in frozen
    assert not any(k.startswith("heads.") or ".blocks.3." in k for k in frozen)
    assert set(best["weights"][1]) == set(last["model"])
    # the layout before this change: the whole model in both files
    torch.save({**last, "model": full}, tmp_path / "old_last.pt")
    torch.save({"model": full, "epoch": 1, "score": 0.0}, tmp_path / "old_best.pt")
    new = [t.last_path.stat().st_size, t.best_path.stat().st_size]
    old = [(tmp_path / f"old_{n}.pt").stat().st_size for n in ("last", "best")]
    frozen_bytes = sum(full[k].numel() * full[k].element_size() for k in frozen)
    assert old[0] - new[0] == pytest.approx(frozen_bytes, rel=0.01)  # what last.pt saves is the frozen weights
    # 3 of 4 blocks frozen: last.pt keeps trainable weights + 2 Adam moments (0.50 of the old), best.pt 0.25
    assert new[0] < 0.52 * old[0] and sum(new) < 0.42 * sum(old)


def test_a_checkpoint_of_other_frozen_weights_is_not_resumed(
    jobs: dict[str, Job], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = _with(jobs["TS-thyroid_malignancy"], epochs=2)
    first = _trainer(job, tmp_path / "ck")
    first.fit(stop_after_epoch=1)
    other = _trainer(job, tmp_path / "ck", model_seed=999)
    assert other.fingerprint != first.fingerprint
    assert not other.resume() and other.state.epoch == 0
    assert "cannot be resumed: its frozen weights differ" in caplog.text
    aside = first.last_path.with_name("last.pt.not-resumed")  # kept, not overwritten by the new training
    assert aside.is_file() and not first.last_path.exists()
    aside.rename(first.last_path)  # given back: the model that wrote it resumes it
    same = _trainer(job, tmp_path / "ck")
    assert same.fingerprint == first.fingerprint and same.resume() and same.state.epoch == 1


def test_loss_balance_modes() -> None:
    aux = torch.tensor(0.1)
    bal = build_balance("initial", {"a": 1.0, "b": 2.0})
    assert float(bal.combine("a", torch.tensor(2.5) + aux, aux)) == pytest.approx(1.1)  # 2.5 / 2.5 + aux
    assert float(bal.combine("a", torch.tensor(1.25) + aux, aux)) == pytest.approx(0.6)  # 1.25 / 2.5 + aux
    assert float(bal.combine("b", torch.tensor(4.0) + aux, aux)) == pytest.approx(2.1)  # weight 2 x 4 / 4 + aux
    assert bal.record() == {"mode": "initial", "initial_loss": pytest.approx({"a": 2.5, "b": 4.0})}
    unc = build_balance("uncertainty", {"a": 1.0, "b": 1.0})
    loss = unc.combine("a", torch.tensor(2.77), torch.tensor(0.0))
    assert float(loss.detach()) == pytest.approx(2.77)  # s = 0 at the start
    loss.backward()
    assert float(unc.log_vars["a"].grad) == pytest.approx(1 - 2.77)  # d/ds (L exp(-s) + s): s grows for a big L
    assert unc.log_vars["b"].grad is None
    for mode in ("initial", "uncertainty"):  # one task: the plain loss, no parameter
        one = build_balance(mode, {"a": 1.0})
        assert one.mode == "equal" and not list(one.parameters())
        assert float(one.combine("a", torch.tensor(3.0), aux)) == 3.0


def test_job_records_balance_selection_and_steps(jobs: dict[str, Job], tmp_path: Path) -> None:
    au = run_job(_with(jobs["AU"], epochs=2, loss_balance="uncertainty"), tmp_path / "au", "cpu")
    rec = au["training"]["loss_balance"]
    assert rec["mode"] == "uncertainty" and all(s != 0.0 for s in rec["log_vars"].values())
    assert rec["weights"] == pytest.approx({t: math.exp(-s) for t, s in rec["log_vars"].items()})
    sel = au["selection"]
    assert sel["scope"] == "model" and "note" not in sel and sel["epochs"] == dict.fromkeys(au["tasks"], sel["epoch"])
    assert any("selection images (< 20)" in w for w in sel["warnings"])  # 4 images per task
    assert all(au["tasks"][t]["steps"] == sum(h["task_steps"].get(t, 0) for h in au["history"]) for t in au["tasks"])
    # one task: every balance mode is the plain loss, so TS results do not move
    ts = jobs["TS-thyroid_malignancy"]
    plain = run_job(_with(ts, epochs=2), tmp_path / "plain", "cpu")
    balanced = run_job(_with(ts, epochs=2, loss_balance="uncertainty"), tmp_path / "bal", "cpu")
    assert _reproducible(plain) == _reproducible(balanced)
    task = run_job(_with(jobs["AU"], epochs=2, selection_scope="task"), tmp_path / "task", "cpu")
    assert task["selection"]["scope"] == "task" and task["selection"]["note"].startswith("optimistic")
    assert set(task["selection"]["epochs"]) == set(task["tasks"]) and task["selection"]["epoch"] is None


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the largest tensor's data: the zip stays readable and torch loads it without a word."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    blob = bytearray(path.read_bytes())
    header = 30 + int.from_bytes(blob[info.header_offset + 26 : info.header_offset + 28], "little")
    header += int.from_bytes(blob[info.header_offset + 28 : info.header_offset + 30], "little")
    blob[info.header_offset + header + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", ["truncate", "random", "flip"])
def test_a_damaged_last_checkpoint_is_set_aside_and_training_starts_over(
    jobs: dict[str, Job], tmp_path: Path, damage: str
) -> None:
    """Issue 16.4: a torn, overwritten or bit-flipped last.pt is never loaded; the job restarts and ends as an
    undamaged run."""
    job = jobs["TS-thyroid_malignancy"]
    straight = _trainer(job, tmp_path / "straight").fit()
    first = _trainer(job, tmp_path / "damaged")
    first.fit(stop_after_epoch=1)
    blob = first.last_path.read_bytes()
    if damage == "flip":
        _flip_tensor_byte(first.last_path)
        torch.load(first.last_path, weights_only=True)  # torch itself does not notice
        with pytest.raises(checkpoint.DamagedCheckpoint, match="checksum"):
            checkpoint.load(first.last_path)
    else:
        first.last_path.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else os.urandom(4096))
    again = _trainer(job, tmp_path / "damaged")
    fit = again.fit()
    assert fit.history == straight.history and fit.selected_epoch == straight.selected_epoch
    assert (again.last_path.parent / "last.pt.damaged").is_file()


def test_a_damaged_best_checkpoint_sends_the_job_back_to_epoch_one(jobs: dict[str, Job], tmp_path: Path) -> None:
    """The selected epochs' weights are only in best.pt: a damaged one cannot be resumed past, so training restarts
    and the job ends as an undamaged run (never quietly tested with the last epoch instead)."""
    job = jobs["TS-thyroid_malignancy"]
    straight = _trainer(job, tmp_path / "straight").fit()
    first = _trainer(job, tmp_path / "damaged")
    first.fit(stop_after_epoch=2)
    assert first.best_path.is_file()
    _flip_tensor_byte(first.best_path)
    again = _trainer(job, tmp_path / "damaged")
    fit = again.fit()
    assert fit.history == straight.history and fit.selected_epoch == straight.selected_epoch
    assert fit.selection == straight.selection == "best"
    assert {p.name for p in again.best_path.parent.glob("*.damaged")} == {"best.pt.damaged", "last.pt.damaged"}


def _state_digest(path: Path) -> str:
    """The checksum of a last.pt's training state: all but "trained", its epochs' wall-clock seconds."""
    return checkpoint.content_digest({k: v for k, v in checkpoint.load(path).items() if k != "trained"})


class _Held:
    """checkpoint.save_atomic, holding the write of epoch 1's last.pt until the test's callback lets it go (the
    next epoch has taken a step: every trainable weight and AdamW moment has moved), then noting each last.pt's
    epoch and checksum."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import threading

        self.real = checkpoint.save_atomic
        self.go = threading.Event()
        self.written: list[tuple[int, str]] = []
        monkeypatch.setattr(checkpoint, "save_atomic", self)

    def __call__(self, obj: dict, path: Path) -> None:
        if path.name == "last.pt" and obj["epoch"] == 1:
            assert self.go.wait(60), "epoch 2 never trained while epoch 1's last.pt waited"
        self.real(obj, path)
        if path.name == "last.pt":
            self.written.append((obj["epoch"], _state_digest(path)))


class _AtEpoch2(Callback):
    """Lets the held write go at epoch 2's first step; `then` raises there (a kill), if given."""

    def __init__(self, held: _Held, then: BaseException | None = None) -> None:
        self.held, self.then = held, then

    def on_train_batch_end(self, trainer: Trainer, batch: BatchEnd) -> None:
        if batch.epoch == 1:
            self.held.go.set()
            if self.then is not None:
                raise self.then


def test_last_pt_is_written_while_the_next_epoch_trains_and_holds_its_own_epoch(
    jobs: dict[str, Job], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Epoch 1's last.pt is written in the background while epoch 2 trains (held here until epoch 2 has taken a
    step): the file holds epoch 1's state to the last bit, the checksum of the last.pt a fit stopped after epoch 1
    leaves; the fit's results are those of a fit whose writes were never held."""
    import sklearn.metrics  # noqa: F401  # its first import draws from Python's random, which last.pt holds

    job = _with(jobs["AU"], checkpoint_every=1)
    stopped = _trainer(job, tmp_path / "stopped")
    stopped.fit(stop_after_epoch=1)
    epoch_1 = _state_digest(stopped.last_path)
    plain = _trainer(job, tmp_path / "plain").fit()

    held = _Held(monkeypatch)
    trainer = _trainer(job, tmp_path / "held")
    trainer.callbacks.append(_AtEpoch2(held))
    fit = trainer.fit()
    assert held.written[0] == (1, epoch_1) and [e for e, _ in held.written] == [1, 2, 3]
    assert fit.history == plain.history and fit.selected_epoch == plain.selected_epoch


def test_a_job_killed_while_last_pt_is_written_leaves_that_whole_file(
    jobs: dict[str, Job], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed (Ctrl-C, SIGTERM) during epoch 2 while epoch 1's last.pt is still being written: the fit waits for
    the write, so last.pt is epoch 1's whole file, with no temporary left, and the job resumes from it."""
    job = _with(jobs["AU"], checkpoint_every=1)
    held = _Held(monkeypatch)
    trainer = _trainer(job, tmp_path / "killed")
    trainer.callbacks.append(_AtEpoch2(held, then=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert [e for e, _ in held.written] == [1]
    assert checkpoint.load(trainer.last_path)["epoch"] == 1
    assert sorted(p.name for p in trainer.last_path.parent.iterdir()) == ["last.pt"]
    resumed = _trainer(job, tmp_path / "killed")
    assert resumed.checkpoints.resume(resumed) and resumed.state.epoch == 1


def test_a_checkpoint_keeps_the_cuda_rng_of_the_job_s_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the job's GPU's CUDA random state is saved, and restored to the job's GPU: a state per visible GPU
    failed to restore where fewer are visible (a pool worker sees one). A checkpoint of the earlier layout (a state
    per GPU) restores the device's own state where that index exists, else the first. No GPU here: torch.cuda's
    two state functions are replaced by ones that record what they are given."""
    from usagg.engine import checkpoint

    saved: dict[int, torch.Tensor] = {i: torch.full((4,), i, dtype=torch.uint8) for i in range(4)}
    restored: list[tuple[int, int]] = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved[device.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((int(s[0]), device.index)))
    state = checkpoint.rng_state(torch.device("cuda", 2))
    assert [int(s[0]) for s in state["cuda"]] == [2]
    assert "cuda" not in checkpoint.rng_state(torch.device("cpu"))
    checkpoint.set_rng_state(state, torch.device("cuda", 0))  # resumed in a worker that sees that GPU as cuda:0
    old = {**state, "cuda": [saved[i] for i in range(4)]}  # the earlier layout, written where 4 GPUs were visible
    checkpoint.set_rng_state(old, torch.device("cuda", 3))
    checkpoint.set_rng_state({**old, "cuda": old["cuda"][:2]}, torch.device("cuda", 3))  # that index is gone
    checkpoint.set_rng_state(old, torch.device("cpu"))
    assert restored == [(2, 0), (3, 3), (0, 3)]

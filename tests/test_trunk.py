"""The shared frozen trunk: the same bits as recomputing, mixed batches, keys, damaged files, jobs with it on/off."""

from __future__ import annotations

import errno
import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data_support import tiny_layout

from tests.tiny_study import write_tiny_study
from usagg.atomic import NoSpaceLeft
from usagg.data.datasets import TaskDataset
from usagg.data.fmc_uia import read_split
from usagg.engine import checkpoint
from usagg.engine.augment import Augmenter
from usagg.engine.batches import TensorSplit, job_trunks, trunk_share
from usagg.engine.device import resolve_compute, seed_everything
from usagg.engine.job import build_trainer, run_job
from usagg.engine.jobdata import load_job_data
from usagg.engine.trainer import Trainer
from usagg.model.backbones import EncoderInput
from usagg.model.m2dino import build_model
from usagg.model.trunk import load_or_build
from usagg.plan import Job, plan
from usagg.spec.load import load_study
from usagg.spec.models import AugmentationSpec, ModelSpec, TaskSpec

CPU = torch.device("cpu")
META = torch.device("meta")
SEG = TaskSpec(id="seg_t", type="segmentation", num_classes=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_layout(tmp_path_factory.mktemp("tiny"), n=12, hw=(40, 56))


def _setup(root: Path, cache: Path, frozen: int = 2) -> tuple:
    ds = TaskDataset(read_split(root, "train")["seg_t"], SEG, 64, cache)
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="dinov3_test", image_size=64, frozen_blocks=frozen), [SEG], False)
    trunk = load_or_build(
        model.encoder,
        [s.image_file for s in ds.samples],
        64,
        "auto",
        cache,
        lambda: ds.tensors()["images"].numpy(),
        CPU,
    )
    return ds, model, trunk


def test_trunk_rows_are_the_bits_of_recomputing(tiny: Path, tmp_path: Path) -> None:
    ds, model, trunk = _setup(tiny, tmp_path)
    assert trunk.layout.start == 2 and trunk.layout.stored == (0, 1)  # feature blocks 0..3: taps 0 and 1
    assert trunk.data.shape == (12, 2, 1 + 4 + 16, 192) and trunk.data.dtype == np.float32
    split = TensorSplit.from_dataset(ds)
    model.train()
    for idx in (torch.tensor([4]), torch.tensor([3, 1, 7, 7, 10, 0]), torch.arange(12)):
        x, _ = split.batch(idx, CPU)
        tokens = model.encoder.trunk_tokens(x, trunk.layout)  # a training-size batch, in train mode
        stored = torch.from_numpy(np.array(trunk.data))[trunk.rows_of([ds.samples[i].image_file for i in idx])]
        for j in range(2):
            assert torch.equal(tokens[j], stored[:, j])


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_pixels_trunk_and_mixed_batches_give_the_same_bits(tiny: Path, tmp_path: Path) -> None:
    ds, model, trunk = _setup(tiny, tmp_path)
    plain, served = TensorSplit.from_dataset(ds), TensorSplit.from_dataset(ds, trunk)
    idx = torch.tensor([3, 1, 7, 7, 10, 0])
    x, y = plain.batch(idx, CPU)
    model.train()
    ref = model(x, "seg_t", y)
    ref.loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    inp, y2 = served.batch(idx, CPU)
    assert isinstance(inp, EncoderInput) and inp.images is None and inp.shape[0] == 6
    pos = torch.tensor([1, 4])  # a mixed batch: two samples from pixels, four from the trunk
    rest = torch.tensor([0, 2, 3, 5])
    mixed = EncoderInput(6, (64, 64), x[pos], pos, [t[rest] for t in inp.tokens], rest)
    for batch in (inp, mixed):
        model.zero_grad(set_to_none=True)
        out = model(batch, "seg_t", y2)
        assert torch.equal(out.outputs, ref.outputs) and torch.equal(out.loss, ref.loss)
        out.loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[n], ref_grads[n]) for n in grads)
    assert not any("blocks.0." in n or "blocks.1." in n for n in ref_grads)  # frozen: no gradients


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_augmented_samples_are_recomputed_and_untouched_ones_served(tiny: Path, tmp_path: Path) -> None:
    ds, model, trunk = _setup(tiny, tmp_path)
    aug = Augmenter(AugmentationSpec(hflip_p=0.3), 5)
    plain, served = TensorSplit.from_dataset(ds, None, aug), TensorSplit.from_dataset(ds, trunk, aug)
    model.train()
    idx = torch.tensor([3, 1, 7, 7, 10, 0, 2, 5])
    touched = 0
    for step in range(6):
        x, y = plain.batch(idx, CPU, step)
        inp, y2 = served.batch(idx, CPU, step)
        assert torch.equal(y, y2)
        n_pix = 0 if inp.images is None else len(inp.images)
        assert n_pix == int(aug.draw(step, 8).touched.sum())
        touched += n_pix
        assert torch.equal(model(x, "seg_t", y).loss, model(inp, "seg_t", y2).loss)
    assert served.seen == 48 and served.served == 48 - touched and 0 < touched < 48
    assert (
        trunk_share({"seg_t": served})
        == f"{48 - touched} of 48 training samples ({100 * (48 - touched) / 48:.1f} %) served from the frozen trunk"
    )
    assert plain.served == plain.seen == 0


@pytest.mark.slow  # over a second: out of `make test-fast`
def test_damaged_or_stale_trunk_files_are_rebuilt(tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds, _model, trunk = _setup(tiny, tmp_path)
    good = np.array(trunk.data)
    path = trunk.path
    with path.open("r+b") as fh:  # truncated, as a full disk or a killed copy leaves it
        fh.truncate(path.stat().st_size // 2)
    with caplog.at_level(logging.WARNING):
        again = _setup(tiny, tmp_path)[2]
    assert "damaged or incomplete" in caplog.text and again.path == path
    assert np.array_equal(np.asarray(again.data), good)
    raw = bytearray(path.read_bytes())  # same size, other bytes, a later mtime
    raw[-8:] = b"\x00" * 8
    path.write_bytes(bytes(raw))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    assert np.array_equal(np.asarray(_setup(tiny, tmp_path)[2].data), good)
    # a changed image is another key: the old file is never read for it
    img = ds.samples[0].image_file
    Image.fromarray(np.full((40, 56, 3), 90, np.uint8)).save(img)
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    fresh = _setup(tiny, tmp_path)[2]
    assert fresh.path != path and not np.array_equal(np.asarray(fresh.data)[0], good[0])
    assert np.array_equal(np.asarray(fresh.data)[1:], good[1:])
    # other frozen weights (another init seed) or another frozen range: other files
    torch.manual_seed(1)
    other = build_model(ModelSpec(backbone="dinov3_test", image_size=64, frozen_blocks=2), [SEG], False)
    files = [s.image_file for s in ds.samples]
    t2 = load_or_build(other.encoder, files, 64, "auto", tmp_path, lambda: ds.tensors()["images"].numpy(), CPU)
    assert t2.path not in (path, fresh.path)
    assert _setup(tiny, tmp_path, frozen=3)[2].path not in (path, fresh.path, t2.path)


@pytest.mark.parametrize("where", ["blocks", "header"])
def test_a_full_disk_while_building_is_named_not_a_sigbus(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Audit fault 1 and 3: the trunk is written through a memory map, where a full disk was a SIGBUS ("Bus error",
    exit 135, no message); its blocks are now allocated first, and a full disk anywhere in the build (numpy's
    header names no file) is NoSpaceLeft naming the entry and the cache folder, with nothing left behind."""
    ds = TaskDataset(read_split(tiny, "train")["seg_t"], SEG, 64, tmp_path)  # decoded before the disk is full
    model = build_model(ModelSpec(backbone="dinov3_test", image_size=64, frozen_blocks=2), [SEG], False)
    allocated: list[int] = []

    def full(*args: object, **kwargs: object) -> None:
        allocated.append(1)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "blocks":
        monkeypatch.setattr(os, "posix_fallocate", full)
    else:
        monkeypatch.setattr(np.lib.format, "open_memmap", full)
    files = [s.image_file for s in ds.samples]
    with pytest.raises(NoSpaceLeft) as err:
        load_or_build(model.encoder, files, 64, "auto", tmp_path, lambda: ds.tensors()["images"].numpy(), CPU)
    text = str(err.value)
    assert allocated and re.match(rf"no space left on device at {tmp_path}/trunk/[0-9a-f]+\.npy \(No space", text)
    assert "the cache folder's disk is full" in text and "`usagg cache prune`" in text
    assert [p.name for p in (tmp_path / "trunk").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    ds2, _, trunk = _setup(tiny, tmp_path)
    assert trunk.data.shape[0] == len(ds2.samples)


def test_a_trunk_is_built_only_where_the_encoder_is(tiny: Path, tmp_path: Path) -> None:
    """The frozen blocks run where the model lives: an encoder left on the CPU for a GPU job is refused, not mixed."""
    ds = TaskDataset(read_split(tiny, "train")["seg_t"], SEG, 64, tmp_path)
    model = build_model(ModelSpec(backbone="dinov3_test", image_size=64, frozen_blocks=2), [SEG], False)
    files = [s.image_file for s in ds.samples]
    with pytest.raises(ValueError, match="encoder is on cpu but its trunk is to be built on meta"):
        load_or_build(model.encoder, files, 64, "auto", tmp_path, lambda: ds.tensors()["images"].numpy(), META)
    assert not list((tmp_path / "trunk").glob("*.npy"))  # nothing written


def test_no_trunk_when_a_moe_block_is_frozen_or_nothing_is() -> None:
    tasks = [SEG]
    moe_frozen = build_model(ModelSpec(backbone="dinov3_test", frozen_blocks=3, moe={"experts": 2}), tasks, True)
    assert moe_frozen.encoder.trunk_layout() is None  # MoE blocks 2, 3 (the later half) inside blocks 0..2
    moe_above = build_model(ModelSpec(backbone="dinov3_test", frozen_blocks=2, moe={"experts": 2}), tasks, True)
    assert moe_above.encoder.trunk_layout().stored == (0, 1)
    assert build_model(ModelSpec(backbone="dinov3_test", frozen_blocks=0), tasks, False).encoder.trunk_layout() is None


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    d = tmp_path_factory.mktemp("trunkjobs")
    spec = write_tiny_study(
        d / "study.yaml",
        "trunk-test",
        d,
        paradigms=("TS", "AU"),
        epochs=3,
        steps=2,
        model={"frozen_blocks": 2, "moe": {"experts": 4}},
        training={"batch_size": 6, "warmup_epochs": 0.5},
    )
    return {j.paradigm: j for j in plan(load_study(spec)) if j.paradigm == "AU" or j.name == "thyroid_nodule_det"}


def _off(job: Job) -> Job:
    return job.model_copy(update={"model": job.model.model_copy(update={"trunk": "off"})})


@pytest.mark.slow
def test_a_job_gives_the_same_metrics_with_the_trunk_on_or_off(
    jobs: dict[str, Job], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = jobs["AU"]  # MoE in blocks 2, 3: above the two frozen blocks, so the trunk applies
    with caplog.at_level(logging.INFO):
        on = run_job(job, tmp_path / "on", "cpu")
    assert "served from the frozen trunk" in caplog.text and "frozen trunk: blocks 0-1" in caplog.text
    off = run_job(_off(job), tmp_path / "off", "cpu")
    assert {k: v for k, v in on.items() if k != "throughput"} == {k: v for k, v in off.items() if k != "throughput"}


@pytest.mark.slow
def test_resume_with_trunk_and_augmentation_gives_the_same_weights(jobs: dict[str, Job], tmp_path: Path) -> None:
    job = jobs["TS"]

    def trainer(ckpt: Path) -> Trainer:
        seed_everything(job.seed, CPU)
        data = load_job_data(job)
        model = build_model(job.model, job.tasks, job.moe)
        compute = resolve_compute("fp32", CPU)
        trunks = job_trunks(model, job, data, compute)
        aug = Augmenter(AugmentationSpec(hflip_p=0.5), job.seed)
        return build_trainer(job, ckpt, compute, data=data, model=model, trunks=trunks, augment=aug)

    straight = trainer(tmp_path / "straight")
    straight.fit()
    first = trainer(tmp_path / "resumed")
    first.fit(stop_after_epoch=1)
    assert checkpoint.load(first.last_path)["epoch"] == 1
    torch.manual_seed(999)
    second = trainer(tmp_path / "resumed")
    second.fit()
    assert second.state.history == straight.state.history
    sa, sb = straight.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    split = straight.train["thyroid_nodule_det"]
    assert split.seen == 3 * 2 * 6 and 0 < split.served < split.seen


def test_a_job_s_data_shares_one_gpu_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """`GpuRoom`: a quarter of the memory free at the job's first placement, for its trunks and splits together
    (each placement reading free memory anew gave each a quarter of what was left). No GPU here: the free memory
    is what torch.cuda.mem_get_info is made to report, and how often it is read is counted."""
    from usagg.engine.batches import GPU_RESIDENT_SHARE, GpuRoom

    reads: list[int] = []

    def free_memory(device: torch.device) -> tuple[int, int]:
        reads.append(1)
        return 1000 - 100 * len(reads), 2000  # less free at every read, as data lands on the GPU

    monkeypatch.setattr(torch.cuda, "mem_get_info", free_memory)
    room = GpuRoom(torch.device("cuda", 0))
    assert GPU_RESIDENT_SHARE == 0.25  # 900 free at the first read: 225 bytes for the job
    assert [room.take(n) for n in (200, 30, 25, 1)] == [True, False, True, False]
    assert reads == [1] and room.left == 0
    assert not GpuRoom(torch.device("cpu")).take(1) and reads == [1]

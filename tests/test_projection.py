"""usagg/projection.py: the study projection's arithmetic against hand computations, the planned jobs' shapes of
studies/fmc_uia.yaml, and the jobs_per_gpu measurement file that `execution.jobs_per_gpu: auto` reads."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from usagg.execute.pool import GIB, MAX_JOBS_PER_GPU, PoolExecutor
from usagg.projection import (
    JobShape,
    KindCost,
    MeasuredJob,
    TrunkCost,
    checkpoint_saves,
    choose_jobs_per_gpu,
    device_slug,
    job_saves,
    job_seconds,
    kind_cost,
    measurement_path,
    project,
    read_measurement,
    study_shapes,
    summary,
    write_measurement,
)
from usagg.spec.models import AUTO_CHECKPOINT_SHARE

ROOT = Path(__file__).resolve().parents[1]
FMC_IMAGES = {"segmentation": 16615, "classification": 16361, "detection": 4333, "regression": 3078}


#: Two measured jobs (1 and 3 epochs) whose parts are known: training 3 s per epoch (100 segmentation images), selection
#: 1 s per epoch (20 images), checkpoints 1.5 s per file (2 files, then 3), the rest 0.5 s per epoch over 12.5 s fixed.
LO = MeasuredJob(1, 20.0, {"segmentation": 100}, train_s=4.0, select_images=20, select_s=1.5, checkpoint_s=3.0, saves=2)
HI = MeasuredJob(
    3, 30.5, {"segmentation": 100}, train_s=10.0, select_images=20, select_s=3.5, checkpoint_s=4.5, saves=3
)


def test_kind_cost_splits_training_selection_checkpoints_per_epoch_and_fixed_by_hand() -> None:
    # the steady loop's cost of a segmentation image is 1/50 s: 2 s of steady work per epoch, so 1.5x that per image,
    # for every type; selection 1 s / 20 images; 7.5 s over 5 files; fixed 20 - (3 + 1 + 0.5) - 2 x 1.5 = 12.5 s
    cost = kind_cost(LO, HI, {"segmentation": 1 / 50, "classification": 1 / 200})
    assert cost.image_epoch_s == pytest.approx({"segmentation": 0.03, "classification": 0.0075})
    assert (cost.select_image_s, cost.epoch_s, cost.save_s, cost.fixed_s) == pytest.approx((0.05, 0.5, 1.5, 12.5))
    # the costs give both measured jobs back (their trunk aside): 1 epoch writes last.pt and best.pt; 3 epochs of
    # 4.5 s allow no save between the first and the last (1.5 s > 5 % of 4.5 s), so last.pt twice and best.pt
    trunk = TrunkCost(0.0, 0.0)
    for m, saves in ((LO, 2), (HI, 3)):
        shape = JobShape("AU", True, m.epochs, {"segmentation": 100}, select_images=20, writes_best=True)
        assert job_saves(shape, cost) == saves
        assert sum(job_seconds(shape, cost, trunk).values()) == pytest.approx(m.seconds)
    # without relative costs every image costs the same; a longer run measured shorter is noise: 0 per epoch
    assert kind_cost(LO, HI).image_epoch_s == pytest.approx({"segmentation": 0.03})
    shorter = MeasuredJob(
        2, 18.5, {"segmentation": 100}, 3.5, select_images=20, select_s=1.0, checkpoint_s=3.0, saves=2
    )
    noisy = kind_cost(LO, shorter)  # less training, selection and rest (11 s) at 2 epochs than at 1
    assert (noisy.image_epoch_s, noisy.select_image_s, noisy.epoch_s) == ({"segmentation": 0.0}, 0.0, 0.0)
    # no selection images to scale by: what selection measured is per epoch
    bare = kind_cost(replace(LO, select_images=0), replace(HI, select_images=0))
    assert (bare.select_image_s, bare.epoch_s, bare.fixed_s) == pytest.approx((0.0, 1.5, 12.5))
    with pytest.raises(ValueError, match="no relative cost for task type"):
        kind_cost(LO, HI, {"detection": 0.1})
    with pytest.raises(ValueError, match="two increasing positive epoch counts"):
        kind_cost(HI, LO)


def test_a_large_constant_checkpoint_cost_does_not_scale_with_the_images() -> None:
    """As in the AU jobs measured on an H100: the 5-epoch job's rest grew by one more save, not with its images. Read
    as a cost per image and epoch (the old model), 8 s more over 4 more epochs of 100 images was 20 ms per image, twice
    training's 10 ms."""
    lo = MeasuredJob(1, 11.0, {"segmentation": 100}, train_s=1.0, checkpoint_s=8.0, saves=2)
    hi = MeasuredJob(5, 19.0, {"segmentation": 100}, train_s=5.0, checkpoint_s=12.0, saves=3)
    cost = kind_cost(lo, hi)
    assert cost.image_epoch_s == pytest.approx({"segmentation": 0.01})  # training alone: 10 ms per image
    assert (cost.save_s, cost.epoch_s, cost.fixed_s) == pytest.approx((4.0, 0.0, 2.0))
    trunk = TrunkCost(0.0, 0.0)
    for every, saves in ((10, 5 + 1), (7, 8 + 1), (50, 1 + 1)):  # last.pt ceil(50 / k) times, best.pt once
        small, large = (
            JobShape("AU", True, 50, {"segmentation": n}, checkpoint_every=every, writes_best=True) for n in (1e3, 1e4)
        )
        a, b = job_seconds(small, cost, trunk), job_seconds(large, cost, trunk)
        assert a["checkpoints"] == b["checkpoints"] == pytest.approx(4.0 * saves)
        assert sum(b.values()) - sum(a.values()) == pytest.approx(50 * 9e3 * 0.01)  # only training grew
    # auto: a 100 s epoch allows a 4 s save after every epoch (4 <= 5 % of 100), a 10 s one every 8th epoch
    auto = [JobShape("AU", True, 50, {"segmentation": n}, writes_best=True) for n in (1e3, 1e4)]
    assert [job_saves(j, cost) for j in auto] == [2 + 48 // 8 + 1, 50 + 1]
    p = project(auto, {True: cost}, trunk)
    assert p.saves == 9 + 51 and p.parts_s["checkpoints"] == pytest.approx(4.0 * 60)
    assert p.parts_s == pytest.approx(
        {"training": 50 * 1.1e4 * 0.01, "selection": 0, "per_epoch": 0, "checkpoints": 240, "fixed": 4, "trunk": 0}
    )


def test_checkpoint_saves_every_k_epochs_and_the_auto_bound() -> None:
    assert [checkpoint_saves(50, k, 1.0, 1.0) for k in (1, 7, 10, 50, 60)] == [50, 8, 5, 1, 1]
    assert checkpoint_saves(5, 2, 1.0, 1.0, best=True) == 3 + 1
    assert checkpoint_saves(1, "auto", 1.0, 9.0) == 1 and checkpoint_saves(2, "auto", 1.0, 9.0) == 2
    assert checkpoint_saves(50, "auto", 10.0, 0.0) == 50  # a free save: after every epoch
    assert checkpoint_saves(50, "auto", 0.0, 1.0) == 2  # no time between saves: the first and the last
    assert checkpoint_saves(50, "auto", 10.0, 4.0) == 2 + 48 // 8  # 4 s needs 80 s since the last save: 8 epochs
    for epoch_s in (0.3, 2.0, 7.5, 40.0, 300.0):
        for save_s in (0.01, 0.4, 3.0, 25.0):
            between = checkpoint_saves(50, "auto", epoch_s, save_s) - 2
            assert 0 <= between <= 48
            assert between * save_s <= AUTO_CHECKPOINT_SHARE * 48 * epoch_s  # the saves between: <= 5 % of epochs 2-49
    with pytest.raises(ValueError, match="at least 1"):
        checkpoint_saves(5, 0, 1.0, 1.0)


@pytest.mark.parametrize(("epochs", "epoch_s", "save_s"), [(50, 10.0, 4.0), (30, 3.0, 0.4), (12, 1.0, 3.0)])
def test_checkpoint_saves_under_auto_count_what_the_engine_saves(
    epochs: int, epoch_s: float, save_s: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Checkpointing.should_save` on a clock of `epoch_s` epochs and `save_s` saves: as many last.pt as counted."""
    import usagg.engine.checkpointing as checkpointing
    from usagg.spec.models import TrainingSpec

    clock = [0.0]
    monkeypatch.setattr(checkpointing.time, "perf_counter", lambda: clock[0])
    ck = checkpointing.Checkpointing(tmp_path, "fingerprint", TrainingSpec(epochs=epochs), selection=None)  # type: ignore[arg-type]
    saved = 0
    for done in range(1, epochs + 1):
        clock[0] += epoch_s
        if ck.should_save(done):  # the bookkeeping of `save_last`, without the file
            clock[0] += save_s
            ck._last_save_end, ck._save_cost = clock[0], save_s
            saved += 1
    assert saved == checkpoint_saves(epochs, "auto", epoch_s, save_s)


def test_a_selection_pass_overhead_is_per_task_at_the_test_evaluations_rate_per_image() -> None:
    """A check's selection split is a few images per task, one batch each: its seconds are mostly a pass's overhead.
    With the test evaluation's rate per image (2 ms, over larger splits) the rest is per task and epoch: 1 s per
    epoch for 20 images of 4 tasks is 20 x 2 ms + 4 x 240 ms; the study's 4,000 selection images of 4 tasks then
    cost 8 s + 0.96 s per epoch, where 50 ms per image would have said 200 s."""
    lo, hi = (replace(m, tasks=4, eval_image_s=0.002) for m in (LO, HI))
    cost = kind_cost(lo, hi)
    assert (cost.select_image_s, cost.select_task_s) == pytest.approx((0.002, 0.24))
    for m in (lo, hi):  # the measured jobs still come back whole
        shape = JobShape("AU", True, m.epochs, {"segmentation": 100}, select_images=20, writes_best=True, tasks=4)
        assert sum(job_seconds(shape, cost, TrunkCost(0.0, 0.0)).values()) == pytest.approx(m.seconds)
    study = JobShape("AU", True, 1, {"segmentation": 100}, select_images=4000, tasks=4)
    assert job_seconds(study, cost, TrunkCost(0.0, 0.0))["selection"] == pytest.approx(8.96)
    # a test evaluation slower per image than the selection itself: all of it per image, nothing per task
    slow = kind_cost(*(replace(m, tasks=4, eval_image_s=0.5) for m in (LO, HI)))
    assert (slow.select_image_s, slow.select_task_s) == pytest.approx((0.05, 0.0))


def test_selection_scales_with_the_selection_images() -> None:
    cost = KindCost(5.0, {"segmentation": 0.02}, select_image_s=0.004, epoch_s=0.25, save_s=1.0)
    trunk = TrunkCost(0.0, 0.0)
    one, two = (
        job_seconds(JobShape("TS", False, 20, {"segmentation": 500}, select_images=n, checkpoint_every=5), cost, trunk)
        for n in (100, 200)
    )
    assert one == pytest.approx(
        {"training": 200, "selection": 8, "per_epoch": 5, "checkpoints": 4, "fixed": 5, "trunk": 0}
    )
    assert two == {**one, "selection": pytest.approx(16)}


def test_project_sums_whole_jobs_and_divides_by_the_measured_speedup() -> None:
    costs = {
        False: KindCost(7.0, {"segmentation": 0.03, "classification": 0.01}, 0.002, 0.1, 0.5),
        True: KindCost(9.0, {"segmentation": 0.05, "classification": 0.01}, 0.003, 0.2, 2.0),
    }
    trunk = TrunkCost(build_s=0.002, read_s=0.0005)
    jobs = [
        JobShape("TS", False, 50, {"segmentation": 1000}, trunk_built=1100, select_images=100, checkpoint_every=10),
        JobShape(
            "AU",
            True,
            50,
            {"segmentation": 1000, "classification": 500},
            trunk_read=1650,
            select_images=150,
            checkpoint_every=25,
            writes_best=True,
        ),
    ]
    ts = 7 + 50 * 1000 * 0.03 + 50 * 100 * 0.002 + 50 * 0.1 + 5 * 0.5 + 1100 * 0.002  # 1526.7 s
    au = 9 + 50 * (1000 * 0.05 + 500 * 0.01) + 50 * 150 * 0.003 + 50 * 0.2 + 3 * 2.0 + 1650 * 0.0005  # 2798.325 s
    rates = {1: 100.0, 2: 150.0, 4: 160.0}
    p = project(jobs, costs, trunk, jobs_at_once=4, jobs_per_hour=rates)
    assert p.jobs == 2 and p.jobs_at_once == 4 and p.speedup == pytest.approx(1.6) and p.saves == 5 + 3
    assert p.serial_s == pytest.approx({"TS": ts, "AU": au})
    assert p.parts_s == pytest.approx(
        {
            "training": 1500 + 2750,
            "selection": 10 + 22.5,
            "per_epoch": 5 + 10,
            "checkpoints": 2.5 + 6,
            "fixed": 16.0,
            "trunk": 2.2 + 0.825,
        }
    )
    assert p.hours == pytest.approx((ts + au) / 3600 / 1.6)
    # a count never measured gets the speed-up of the largest measured count below it; none measured: 1
    assert project(jobs, costs, trunk, jobs_at_once=3, jobs_per_hour=rates).speedup == pytest.approx(1.5)
    alone = project(jobs, costs, trunk, jobs_at_once=4)
    assert (alone.jobs_at_once, alone.speedup, alone.hours) == (1, 1.0, pytest.approx((ts + au) / 3600))
    out = summary(p)
    assert out["hours"] == pytest.approx(p.hours) and out["paradigm_hours"]["TS"] == pytest.approx(ts / 3600)
    assert out["saves"] == 8 and out["part_hours"]["checkpoints"] == pytest.approx(8.5 / 3600)
    with pytest.raises(ValueError, match=r"no measured cost for task type\(s\) \['detection'\]"):
        project([JobShape("TS", False, 1, {"detection": 5})], costs, trunk)


def _fmc(*overrides: str) -> list:
    from usagg.plan import plan
    from usagg.spec.load import load_study

    return plan(load_study(ROOT / "studies" / "fmc_uia.yaml", ["model.weights=null", *overrides]))


def test_study_shapes_of_fmc_uia_from_the_planner() -> None:
    jobs = _fmc()
    shapes = study_shapes(jobs, FMC_IMAGES)
    total = sum(FMC_IMAGES.values())  # 40,387 training-pool images
    assert len(shapes) == 111 and [s.paradigm for s in shapes].count("TS") == 81
    assert {s.epochs for s in shapes} == {50} and not any(s.moe for s in shapes if s.paradigm == "TS")
    for paradigm in ("TS", "CG", "AU"):  # every paradigm trains each task's images once per epoch, 3 seeds
        trained = sum(sum(s.train_images.values()) for s in shapes if s.paradigm == paradigm)
        assert trained == pytest.approx(3 * total * 0.9)  # selection_fraction 0.1
    au = next(s for s in shapes if s.paradigm == "AU")
    assert au.train_images == pytest.approx({t: 0.9 * n for t, n in FMC_IMAGES.items()})
    # each job scores its tasks' selection split every epoch (a tenth of the pool) and writes best.pt once
    assert au.select_images == pytest.approx(0.1 * total)
    assert sum(s.select_images for s in shapes if s.paradigm == "TS") == pytest.approx(3 * 0.1 * total)
    assert {(s.checkpoint_every, s.writes_best) for s in shapes} == {("auto", True)}
    # random init: one trunk per task and seed, built by the first job to need it, read by the two others
    assert sum(s.trunk_built for s in shapes) == pytest.approx(3 * total)
    assert sum(s.trunk_read for s in shapes) == pytest.approx(2 * 3 * total)
    assert not any(s.trunk_built or s.trunk_read for s in study_shapes(_fmc("model.trunk='off'"), FMC_IMAGES))
    # the selection split is held out before a fraction is taken: half the training images, the same selection;
    # checkpoint_every and selection come from the spec, no selection split writes no best.pt
    half = study_shapes(_fmc("fractions=[0.5]", "training.checkpoint_every=5"), FMC_IMAGES)
    au_half = next(s for s in half if s.paradigm == "AU")
    assert sum(au_half.train_images.values()) == pytest.approx(0.45 * total)
    assert au_half.select_images == pytest.approx(0.1 * total) and au_half.checkpoint_every == 5
    last = study_shapes(_fmc("data.selection_fraction=0", "training.selection=last"), FMC_IMAGES)
    assert {(s.select_images, s.writes_best) for s in last} == {(0.0, False)}
    with pytest.raises(ValueError, match=r"no image count for task type\(s\) \['regression'\]"):
        study_shapes(jobs, {k: v for k, v in FMC_IMAGES.items() if k != "regression"})


def test_study_shapes_share_the_trunk_across_seeds_with_weights(tmp_path: Path) -> None:
    weights = tmp_path / "dinov3.pth"
    weights.write_bytes(b"weights")
    shapes = study_shapes(_fmc(f"model.weights={weights}"), FMC_IMAGES)
    assert sum(s.trunk_built for s in shapes) == pytest.approx(sum(FMC_IMAGES.values()))
    assert sum(s.trunk_read for s in shapes) == pytest.approx(8 * sum(FMC_IMAGES.values()))


def test_choose_jobs_per_gpu_needs_a_real_gain_for_each_step_up() -> None:
    assert choose_jobs_per_gpu({1: 100.0, 2: 180.0, 4: 185.0}) == 2  # 4 gains under 5 % over 2
    assert choose_jobs_per_gpu({1: 100.0, 2: 104.0, 4: 104.5}) == 1
    assert choose_jobs_per_gpu({1: 100.0, 2: 90.0, 4: 200.0}) == 4  # measured against the choice so far, 1
    assert choose_jobs_per_gpu({}) == 1


def test_measurement_file_round_trip_and_what_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name, version = "NVIDIA H100 80GB HBM3", "2.11.0+cu130"
    assert device_slug(name) == "nvidia-h100-80gb-hbm3"
    assert read_measurement(name, version, tmp_path) is None and not caplog.records  # no file: silent
    path = write_measurement(name, version, {1: 300.0, 2: 520.0, 4: 540.0}, tmp_path)
    assert path == measurement_path(name, tmp_path) == tmp_path / "jobs_per_gpu" / "nvidia-h100-80gb-hbm3.json"
    record = json.loads(path.read_text())
    assert record["chosen"] == 2 and record["device"] == name and record["torch"] == version
    assert read_measurement(name, version, tmp_path) == {1: 300.0, 2: 520.0, 4: 540.0}

    with caplog.at_level(logging.WARNING, logger="usagg.projection"):
        assert read_measurement(name, "2.12.0", tmp_path) is None  # another torch: foreign
        path.write_text(json.dumps({**record, "device": "NVIDIA H100 PCIe"}))  # a file copied from another card
        assert read_measurement(name, version, tmp_path) is None
        path.write_text('{"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "jobs_per_hour": {"1": ')
        assert read_measurement(name, version, tmp_path) is None  # damaged
        path.write_text(json.dumps({**record, "jobs_per_hour": {"0": 5.0}}))
        assert read_measurement(name, version, tmp_path) is None  # a count below 1
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4 and all(m.startswith(f"ignoring {path}") for m in said)
    assert "torch 2.11.0+cu130" in said[0] and "NVIDIA H100 PCIe" in said[1] and "damaged" in said[2]


def test_each_accel_mode_has_its_measurement_and_a_mode_without_one_reads_eagers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Jobs at once gain less when steps are recorded, so `auto` reads the measurement of the study's accel mode;
    a mode never measured falls back to eager's (an upper bound), said once."""
    name, version = "NVIDIA H100 80GB HBM3", "2.11.0+cu130"
    eager = write_measurement(name, version, {1: 300.0, 2: 520.0, 4: 720.0}, tmp_path)
    with caplog.at_level(logging.INFO, logger="usagg.projection"):
        assert read_measurement(name, version, tmp_path, accel="step-graphs") == {1: 300.0, 2: 520.0, 4: 720.0}
    assert any(
        "no jobs_per_gpu measurement under execution.accel step-graphs" in r.getMessage() for r in caplog.records
    )
    graphed = write_measurement(name, version, {1: 600.0, 2: 660.0, 4: 680.0}, tmp_path, accel="step-graphs")
    assert graphed == tmp_path / "jobs_per_gpu" / "nvidia-h100-80gb-hbm3-step-graphs.json" != eager
    assert json.loads(graphed.read_text())["accel"] == "step-graphs"
    assert read_measurement(name, version, tmp_path, accel="step-graphs") == {1: 600.0, 2: 660.0, 4: 680.0}
    assert read_measurement(name, version, tmp_path) == {1: 300.0, 2: 520.0, 4: 720.0}  # eager's stays its own
    # a file renamed into another mode's place is foreign
    graphed.write_text(json.dumps({**json.loads(eager.read_text())}))
    with caplog.at_level(logging.WARNING, logger="usagg.projection"):
        assert read_measurement(name, version, tmp_path, accel="step-graphs") is None
    assert "measured under execution.accel eager, not step-graphs" in caplog.records[-1].getMessage()


def test_the_pool_reads_the_measurement_of_its_jobs_accel_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import usagg.projection as projection_module
    from usagg.execute.local import make_local_executor
    from usagg.spec.models import ExecutionSpec

    asked: list[tuple[int, str]] = []
    monkeypatch.setattr(
        projection_module, "measured_jobs_per_gpu", lambda i, accel="eager": asked.append((i, accel)) or 2
    )
    monkeypatch.setattr("usagg.execute.local.resolve_devices", lambda execution: [0])
    pool = make_local_executor(ExecutionSpec(jobs_per_gpu="auto", accel="step-graphs"), tmp_path)
    assert isinstance(pool, PoolExecutor) and pool._gpu_most(0) == 2 and asked == [(0, "step-graphs")]


def test_pool_auto_caps_what_memory_allows_by_the_measured_count(tmp_path: Path) -> None:
    """A GPU under auto: the measured count bounds the workers memory would allow (3 here, 8 GiB jobs in 40 GiB)."""
    measured = PoolExecutor(str(tmp_path), [0, 1], "auto", measured=lambda index: {0: 2, 1: None}[index])
    d0, d1 = measured._devices()
    assert (d0.limit, d0.most, d1.most) == (1, 2, MAX_JOBS_PER_GPU)  # one worker until the first job reports
    d0.free = d1.free = 40 * GIB
    assert d0.packed(8 * GIB) == 2 and d1.packed(8 * GIB) == 3
    asked: list[int] = []
    fixed = PoolExecutor(str(tmp_path), [0], 3, measured=lambda index: asked.append(index) or 1)
    assert [(d.limit, d.most) for d in fixed._devices()] == [(3, MAX_JOBS_PER_GPU)] and not asked  # a set count

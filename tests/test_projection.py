"""usagg/projection.py: the study projection's arithmetic against hand computations, the planned jobs' shapes of
studies/fmc_uia.yaml, and the jobs_per_gpu measurement file that `execution.jobs_per_gpu: auto` reads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from usagg.execute.pool import GIB, MAX_JOBS_PER_GPU, PoolExecutor
from usagg.projection import (
    JobShape,
    KindCost,
    TrunkCost,
    choose_jobs_per_gpu,
    device_slug,
    kind_cost,
    measurement_path,
    project,
    read_measurement,
    study_shapes,
    summary,
    write_measurement,
)

ROOT = Path(__file__).resolve().parents[1]
FMC_IMAGES = {"segmentation": 16615, "classification": 16361, "detection": 4333, "regression": 3078}


def test_kind_cost_splits_fixed_and_per_epoch_seconds_by_hand() -> None:
    # 10 s at 1 epoch, 16 s at 3: 3 s per epoch, 7 s fixed; 100 segmentation images measured, whose steady-loop
    # cost is 1/50 s each: 2 s of steady work per epoch, so 1.5x that per image, for every type
    cost = kind_cost(10.0, 16.0, {"segmentation": 100}, {"segmentation": 1 / 50, "classification": 1 / 200}, (1, 3))
    assert cost.fixed_s == pytest.approx(7.0)
    assert cost.image_epoch_s == pytest.approx({"segmentation": 0.03, "classification": 0.0075})
    # without relative costs every image costs the same; a shorter 2-epoch run than the 1-epoch one is noise: 0/epoch
    assert kind_cost(5.0, 7.0, {"segmentation": 40}).image_epoch_s == pytest.approx({"segmentation": 0.05})
    noisy = kind_cost(5.0, 4.5, {"segmentation": 40})
    assert noisy.fixed_s == 5.0 and noisy.image_epoch_s == {"segmentation": 0.0}
    with pytest.raises(ValueError, match="no relative cost for task type"):
        kind_cost(5.0, 7.0, {"detection": 40}, {"segmentation": 0.1})
    with pytest.raises(ValueError, match="two increasing positive counts"):
        kind_cost(5.0, 7.0, {"segmentation": 40}, epochs=(2, 2))


def test_project_sums_whole_jobs_and_divides_by_the_measured_speedup() -> None:
    costs = {
        False: KindCost(7.0, {"segmentation": 0.03, "classification": 0.01}),
        True: KindCost(9.0, {"segmentation": 0.05, "classification": 0.01}),
    }
    trunk = TrunkCost(build_s=0.002, read_s=0.0005)
    jobs = [
        JobShape("TS", False, 50, {"segmentation": 1000}, trunk_built=1100),
        JobShape("AU", True, 50, {"segmentation": 1000, "classification": 500}, trunk_read=1650),
    ]
    ts = 7 + 50 * 1000 * 0.03 + 1100 * 0.002  # 1509.2 s
    au = 9 + 50 * (1000 * 0.05 + 500 * 0.01) + 1650 * 0.0005  # 2759.825 s
    rates = {1: 100.0, 2: 150.0, 4: 160.0}
    p = project(jobs, costs, trunk, jobs_at_once=4, jobs_per_hour=rates)
    assert p.jobs == 2 and p.jobs_at_once == 4 and p.speedup == pytest.approx(1.6)
    assert p.serial_s == pytest.approx({"TS": ts, "AU": au})
    assert p.parts_s == pytest.approx({"fixed": 16.0, "epochs": 1500 + 2750, "trunk": 2.2 + 0.825})
    assert p.hours == pytest.approx((ts + au) / 3600 / 1.6)
    # a count never measured gets the speed-up of the largest measured count below it; none measured: 1
    assert project(jobs, costs, trunk, jobs_at_once=3, jobs_per_hour=rates).speedup == pytest.approx(1.5)
    alone = project(jobs, costs, trunk, jobs_at_once=4)
    assert (alone.jobs_at_once, alone.speedup, alone.hours) == (1, 1.0, pytest.approx((ts + au) / 3600))
    out = summary(p)
    assert out["hours"] == pytest.approx(p.hours) and out["paradigm_hours"]["TS"] == pytest.approx(ts / 3600)
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
    # random init: one trunk per task and seed, built by the first job to need it, read by the two others
    assert sum(s.trunk_built for s in shapes) == pytest.approx(3 * total)
    assert sum(s.trunk_read for s in shapes) == pytest.approx(2 * 3 * total)
    assert not any(s.trunk_built or s.trunk_read for s in study_shapes(_fmc("model.trunk='off'"), FMC_IMAGES))
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

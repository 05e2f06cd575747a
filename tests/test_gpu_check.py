"""`make gpu-check` without a GPU: its whole flow at a tiny size on the CPU, and its refusals (the script gets
one short run on a lent GPU, so its wiring is tested here).

In-process (`main()` with its settings in the environment): a subprocess would pay torch's, timm's and
sklearn's imports again, most of this file's time."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest


def _check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[int, dict[str, Any]]:
    """`main()` on the CPU; its exit code and JSON (the user cache is a temporary folder: nothing is left behind)."""
    from benchmarks.gpu_check import main

    out = tmp_path / "gpu_check.json"
    settings = {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_JSON": str(out), "USAGG_CACHE": str(tmp_path / "cache"), **env}
    for key in (
        "GPU_CHECK_PHASES",
        "GPU_CHECK_ACCEL",
        "GPU_CHECK_JOBS_AT_ONCE",
        "GPU_CHECK_STUDY_ACCEL",
        "GPU_CHECK_DEADLINE_S",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    if Path("/dev/shm").is_dir():  # the check's stores on tmpfs: their fsyncs and deletions cost seconds on a disk
        monkeypatch.setattr(tempfile, "tempdir", "/dev/shm")
    code = main()
    return code, json.loads(out.read_text()) if out.is_file() else {}


@pytest.mark.slow  # every phase on the CPU at a tiny size: 14 s on two busy cores
def test_every_phase_runs_on_the_cpu_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # one job at a time only: each worker process of a count above 1 costs seconds of imports on the CPU
    code, results = _check(
        tmp_path,
        monkeypatch,
        GPU_CHECK_JOBS_AT_ONCE="1",
        GPU_CHECK_ACCEL="eager,graphs,step-graphs,compiled-step-graphs",
    )
    printed = capsys.readouterr().out
    assert code == 0, printed[-3000:]
    assert set(results["seconds"]) == {
        "bare",
        "jobs",
        "moe",
        "jobs_per_gpu",
        "projection",
        "agreement",
        "gradients",
        "profile",
        "accel",
    }
    # the denominator: the bare timm loop of the same encoder (eager only on the CPU); every job and accel mode is
    # reported as its achieved FLOP/s over the bare loop's
    bare = results["bare"]
    assert [r["mode"] for r in bare["rows"]] == ["eager"] and bare["denominator"] == "eager"
    assert bare["denominator_flops"] == pytest.approx(bare["gflop_per_image"] * 1e9 * bare["rows"][0]["images_per_s"])
    rows, jobs_ok = results["jobs"]
    for r in [*rows, *results["accel"]["rows"]]:
        gflop = r.get("gflop_per_image", results["accel"]["gflop_per_image"])
        assert r["vs_bare"] == pytest.approx(gflop * 1e9 * r["images_per_s"] / bare["denominator_flops"])
    assert "(eager / eager again / graphs+aff / step-graphs / compiled-step-graphs), " in printed
    assert "of the bare eager loop's (target >= 0.6; after its first epoch - / - / - / - / -)" in printed  # 1 epoch
    assert jobs_ok and [r["state"] for r in rows] == ["done"] * 7
    # the eager AU job twice: how far two eager runs land apart (the CPU repeats itself to the last bit)
    assert rows[3]["job"] == f"{rows[2]['job']} eager again" and rows[3]["repeat_gap"] == dict.fromkeys(
        rows[2]["primary"], 0.0
    )
    assert "eager again: two eager runs of one job: task losses at most 0.00 % apart; primary metric gaps " in printed
    assert rows[4]["job"].endswith("graphs+aff") and rows[4]["job"].startswith("AU-")
    # the AU job again under each whole-step mode (eager on the CPU), held against the eager AU job by its task
    # losses, epoch by epoch: here to the last bit
    assert [r["job"] for r in rows[-2:]] == [f"{rows[2]['job']} {m}" for m in ("step-graphs", "compiled-step-graphs")]
    for r in [rows[3], *rows[-2:]]:
        assert r["loss_gap"] == 0 and r["vs_eager"] == dict.fromkeys(rows[2]["primary"], 0.0)
        assert r is rows[3] or r["matches_eager"]
    assert rows[2]["task_loss"][0].keys() == rows[2]["primary"].keys()
    assert "compiled-step-graphs: matches eager: task losses at most 0.00 % apart (tolerance 5 %" in printed
    assert all(r["gflop_per_image"] > 0 and r["mfu"] is None for r in rows)  # no bf16 peak for a CPU
    # each job's FLOPs weighted by the share of its training rows the trunk served (baseline augmentation touches
    # about 28 %); the steady loop's counted on the trunk tokens it trains on, below the AU job's
    assert all(0 < r["trunk_served"] < 1 for r in rows)
    assert results["accel"]["gflop_per_image"] < rows[2]["gflop_per_image"]
    # the compiled model's gradients per task (aot_eager on the CPU) against eager bf16's distance to float32
    gradients, grads_ok = results["gradients"]
    assert grads_ok and [r["task"] for r in gradients] == list(rows[2]["primary"])
    assert all(r["compiled_bf16"] <= 1.5 * r["eager_bf16"] + 2e-3 and r["eager_bf16"] > 0 for r in gradients)
    assert "compiled model (compiled-step-graphs) against eager: gradient error" in printed
    agreement, agree_ok = results["agreement"]
    assert agree_ok and {r["run"].split()[1] for r in agreement} == {"fp32", "bf16"}
    assert [(r["mode"], r["batch"]) for r in results["accel"]["rows"]] == [("eager", 8), ("eager", 32)]
    assert list(results["profile"]) == ["eager"] and results["profile"]["eager"]["wall_ms"] > 0  # CPU: eager only

    # jobs_per_gpu: each count through the real pool, jobs/h = count / its jobs' span inside their workers; no
    # measurement file for a CPU
    jpg = results["jobs_per_gpu"]
    assert list(jpg["jobs_per_hour"]) == ["1"] and jpg["chosen"] == 1 and jpg["file"] is None
    for k, rate in jpg["jobs_per_hour"].items():
        assert rate == pytest.approx(int(k) / jpg["timed_s"][k] * 3600) and jpg["timed_s"][k] <= jpg["wall_s"][k]
    assert "timed from the first job's start in its worker to the last job's end" in printed
    assert not (tmp_path / "cache" / "jobs_per_gpu").exists()

    # projection: four whole jobs (the first TS job builds its task's trunk, the first AU job the three others'), then
    # both lines
    proj = results["projection"]
    runs = proj["jobs"]
    assert [(r["run"], r["epochs"], r["trunk_built"]) for r in runs] == [
        ("ts-lo", 1, 1),
        ("ts-hi", 2, 0),
        ("au-lo", 1, 3),
        ("au-hi", 2, 0),
    ]
    cold, warm = runs[0], [runs[1], runs[3]]  # the trunk per image: built by the first TS job, read by the others
    trunk = proj["whole"]["trunk"]
    assert trunk["build_s"] == pytest.approx(cold["trunk_s"] / cold["trunk_images"])
    assert trunk["read_s"] == pytest.approx(sum(r["trunk_s"] for r in warm) / sum(r["trunk_images"] for r in warm))
    parts = ("trunk_s", "train_s", "select_s", "keep_s", "rule_s", "checkpoint_s", "test_s", "other_s")
    for r in runs:
        assert r["wall_s"] == pytest.approx(sum(r[k] for k in parts))
        # every job scores its selection split after each epoch; last.pt after epoch 1 and after the last (auto),
        # best.pt once; the work between epochs holds the selection, test passes and those checkpoints
        assert r["select_images"] > 0 and r["select_s"] > 0 and r["saves"] == {1: 2, 2: 3}[r["epochs"]]
        assert r["epoch_end_s"] >= r["select_s"] + r["rule_s"] + r["checkpoint_s"] - 1e-3
    whole = proj["whole"]
    for kind, moe in (("dense", False), ("moe", True)):  # per checkpoint file: over both jobs of the kind
        pair = [r for r in runs if r["moe"] == moe]
        cost = whole["costs"][kind]
        assert cost["save_s"] == pytest.approx(sum(r["checkpoint_s"] for r in pair) / sum(r["saves"] for r in pair))
        lo, hi = pair
        # selection per image at the test evaluation's rate, the rest of its seconds per task and epoch
        select = max(0, hi["select_s"] - lo["select_s"])
        assert cost["select_image_s"] == pytest.approx(
            min(lo["test_s"] / lo["test_images"], select / lo["select_images"])
        )
        assert cost["select_image_s"] * lo["select_images"] + cost["select_task_s"] * lo["tasks"] == pytest.approx(
            select
        )
    assert set(whole["part_hours"]) == {"training", "selection", "per_epoch", "checkpoints", "fixed", "trunk"}
    assert whole["saves"] >= 111 * 3  # auto: at least last.pt after epoch 1 and 50, and best.pt, per job
    assert whole["jobs"] == 111 and whole["jobs_per_gpu"] == "auto" and whole["memory_cap"] is None
    assert whole["jobs_at_once"] == 1 and whole["speedup"] == 1  # the CPU's measurement is no GPU's
    assert whole["hours"] == pytest.approx(sum(whole["paradigm_hours"].values()))
    assert whole["hours"] == pytest.approx(sum(whole["part_hours"].values())) and whole["hours"] > 0
    assert proj["total_hours"] == whole["hours"] and whole["h100_hours"] is None  # no peak for a CPU
    assert list(proj["steady"]["modes"]) == ["eager"] and proj["steady"]["total_hours"] > 0
    assert "whole jobs (execution.accel eager): " in printed and "steady loop (eager):" in printed
    assert "parts, one after the other: training " in printed and "per checkpoint file" in printed
    assert f"ts-lo   {runs[0]['job']:<36} 1 ep  wall " in printed and "(2 files)" in printed
    assert "gpu-check PASSED" in printed
    assert results["phases"] == list(results["seconds"]) and results["skipped"] == {} and results["failed"] == {}


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("GPU_CHECK_DEADLINE_S", "soon", "GPU_CHECK_DEADLINE_S=soon: expected seconds (> 0)"),
        ("GPU_CHECK_DEADLINE_S", "-5", "GPU_CHECK_DEADLINE_S=-5: expected seconds (> 0)"),
        ("GPU_CHECK_PHASES", "jobs,warp", "in GPU_CHECK_PHASES; choose from"),
        ("GPU_CHECK_ACCEL", "graph", "in GPU_CHECK_ACCEL; choose from"),
        ("GPU_CHECK_STUDY_ACCEL", "steps", "in GPU_CHECK_STUDY_ACCEL; choose from"),
        ("GPU_CHECK_JOBS_AT_ONCE", "2,4", "1 among them (the baseline)"),
        ("GPU_CHECK_JOBS_AT_ONCE", "1,two", "expected counts of jobs at once from 1 to 16"),
    ],
)
def test_an_unknown_phase_mode_or_count_is_refused_before_any_work(
    tmp_path: Path,
    name: str,
    value: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """In-process (the refusal comes before any work, so a subprocess would only add its start-up)."""
    from benchmarks.gpu_check import main

    out = tmp_path / "gpu_check.json"
    for key, setting in {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_JSON": str(out), name: value}.items():
        monkeypatch.setenv(key, setting)
    assert main() == 2 and not out.exists()
    assert said in capsys.readouterr().out


def test_one_chosen_phase_runs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="moe")
    assert code == 0
    assert set(results["seconds"]) == {"moe"} and results["moe"]["time_ratio"] > 0
    assert results["moe"]["failed"] == [] and results["failed"] == {}  # bench_moe's recording: CUDA only


@pytest.mark.slow  # nine small jobs on the CPU: about 8 s
@pytest.mark.parametrize(
    ("accel", "modes"),
    [(None, ["step-graphs", "compiled-step-graphs"]), ("eager", []), ("eager,graphs", ["graphs+aff"])],
)
def test_the_jobs_phase_runs_only_the_accel_modes_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accel: str | None, modes: list[str]
) -> None:
    """By default the AU job runs eager twice and under each whole-step mode: the graphs+aff job (a compile,
    minutes on a GPU) only when GPU_CHECK_ACCEL names graphs."""
    env = {"GPU_CHECK_ACCEL": accel} if accel else {}
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="jobs", **env)
    rows, ok = results["jobs"]
    assert code == 0 and ok
    assert [r["job"].partition(" ")[2] for r in rows] == ["", "", "", "eager again", *modes]


@pytest.mark.slow  # the jobs_per_gpu and projection phases on the CPU: about 6 s
def test_the_study_accel_setting_runs_the_measured_jobs_under_that_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GPU_CHECK_STUDY_ACCEL: the jobs at once and the projection's whole jobs under another mode than the study's
    (a second run of a lease can measure what a candidate default would give the study)."""
    code, results = _check(
        tmp_path,
        monkeypatch,
        GPU_CHECK_PHASES="jobs_per_gpu,projection",
        GPU_CHECK_JOBS_AT_ONCE="1",
        GPU_CHECK_STUDY_ACCEL="step-graphs",
    )
    printed = capsys.readouterr().out
    assert code == 0 and results["jobs_per_gpu"]["accel"] == "step-graphs"
    assert results["projection"]["whole"]["accel"] == "step-graphs"
    assert "execution.accel step-graphs):" in printed and "whole jobs (execution.accel step-graphs): " in printed


def test_a_whole_job_is_held_against_eager_by_its_task_losses_epoch_by_epoch() -> None:
    from benchmarks.gpu_check import TOLERANCE, loss_gap

    eager = [{"seg": 1.2, "cls": 0.7}, {"seg": 1.0, "cls": 0.5}]
    assert loss_gap(eager, eager) == 0
    near = [{"seg": 1.2, "cls": 0.7}, {"seg": 1.03, "cls": 0.5}]  # 3 % apart in the second epoch
    assert loss_gap(eager, near) == pytest.approx(0.03) and loss_gap(eager, near) <= TOLERANCE["bf16"]["loss_rel"]
    assert loss_gap(eager, [{"seg": 1.2, "cls": 0.7}, {"seg": 1.0, "cls": 0.56}]) == pytest.approx(0.12)
    # another epoch count or another task drawn in an epoch: other batches, not the same job
    assert loss_gap(eager, eager[:1]) == math.inf
    assert loss_gap(eager, [{"seg": 1.2, "cls": 0.7}, {"seg": 1.0}]) == math.inf
    # a run that diverges after its first epoch does not match (a nan gap after a finite one escaped `max`)
    assert loss_gap(eager, [{"seg": 1.2, "cls": 0.7}, {"seg": math.nan, "cls": 0.5}]) == math.inf
    assert loss_gap(eager, [{"seg": 1.2, "cls": 0.7}, {"seg": 1.0, "cls": math.inf}]) == math.inf


def test_primary_metric_gaps_agree_on_two_nans_and_never_on_one() -> None:
    from benchmarks.gpu_check import TOLERANCE, metric_gap

    tol = TOLERANCE["bf16"]
    for metric in ("MRE", "DSC"):
        assert metric_gap(metric, math.nan, math.nan, tol) == (0.0, True)
        assert metric_gap(metric, 0.5, math.nan, tol) == (math.inf, False)
        assert metric_gap(metric, math.nan, 0.5, tol) == (math.inf, False)
    assert metric_gap("MRE", 10.0, 10.0 * (1 + tol["mre_rel"] / 2), tol)[1] is True
    assert metric_gap("DSC", 0.5, 0.5 + 2 * tol["metric"], tol)[1] is False


def test_an_eager_job_that_does_not_repeat_itself_says_the_verdicts_cannot_decide(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.gpu_check import print_jobs

    base = {"state": "done", "images_per_s": 1.0, "peak_gib": None, "wall_s": 1.0, "primary": {"seg": 0.5}}
    rows = [
        {**base, "job": "AU-all"},
        {**base, "job": "AU-all eager again", "vs_eager": {"seg": 0.1}, "loss_gap": 0.08, "matches_eager": False},
        {**base, "job": "AU-all step-graphs", "vs_eager": {"seg": 0.1}, "loss_gap": 0.07, "matches_eager": False},
    ]
    rows[1]["repeat_gap"] = rows[1]["vs_eager"]
    print_jobs(rows, {"sync_steps": 2})
    printed = capsys.readouterr().out
    assert "eager again: two eager runs of one job: task losses at most 8.00 % apart" in printed
    assert "eager does not repeat itself within 5 % on this card: the verdicts below cannot tell" in printed
    rows[1].update(loss_gap=0.01, matches_eager=True)
    print_jobs(rows, {"sync_steps": 2})
    assert "eager does not repeat itself" not in capsys.readouterr().out


def test_a_job_that_did_not_run_as_asked_gets_no_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    """A whole-step job whose steps ran eagerly (recording refused, no compiler) would match eager trivially:
    metrics.json `throughput` says what ran, and the check gives no verdict on the mode it was asked for."""
    from benchmarks.gpu_check import print_jobs, ran_as_asked

    recorded = {"accel": "step-graphs", "replayed_steps": 40, "unrecorded_tasks": []}
    assert ran_as_asked("step-graphs", recorded, "cuda") is None
    assert ran_as_asked("compiled-step-graphs", recorded, "cuda") == "ran as step-graphs"
    refused = {**recorded, "unrecorded_tasks": ["seg", "det"]}
    assert ran_as_asked("step-graphs", refused, "cuda") == (
        "steps of seg, det not recorded (they ran eagerly; the job's log says why)"
    )
    assert ran_as_asked("step-graphs", {"accel": "eager"}, "cpu") is None  # the CPU runs every mode eager
    base = {"state": "done", "images_per_s": 1.0, "peak_gib": None, "wall_s": 1.0, "primary": {"seg": 0.5}}
    row = {**base, "job": "AU-all step-graphs", "vs_eager": {"seg": 0.0}, "loss_gap": 0.0, "matches_eager": False}
    print_jobs([{**row, "ran": ran_as_asked("step-graphs", refused, "cuda")}], {"sync_steps": 2})
    printed = capsys.readouterr().out
    assert "AU-all step-graphs: NOT RUN AS ASKED: steps of seg, det not recorded" in printed
    assert "AU-all step-graphs: no verdict (steps of seg, det" in printed and "matches eager" not in printed


def test_utilisation_above_one_is_an_error_not_a_figure() -> None:
    from benchmarks.gpu_check import peak_bf16, utilisation

    peak = peak_bf16("NVIDIA H200")
    assert peak == 989e12 and peak_bf16("NVIDIA H100 PCIe") == 756e12 and peak_bf16("Some card") is None
    assert peak_bf16("NVIDIA H100 80GB HBM3") == 989e12 and peak_bf16("NVIDIA H100 NVL") == 835e12
    assert peak_bf16("NVIDIA H200 NVL") == 835e12  # the NVL's dense bf16 peak, not the SXM's
    assert utilisation(30.19, 570.9, peak) == pytest.approx(0.017427, rel=1e-4)  # the H200 AU job, 2026-11-28
    assert utilisation(30.19, 570.9, None) is None
    with pytest.raises(ValueError, match=r"MFU .* > 1"):
        utilisation(30.19, 570.9, 2.72)  # a peak in GiB, not FLOP/s: the bug the first H200 run printed


def test_a_mode_that_fails_inside_a_phase_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's repro: the accel phase's first steady loop raises; the phase measures the other rows and goes on,
    and the check fails naming the mode (it printed "gpu-check PASSED" and exited 0)."""
    import benchmarks.gpu_check as check

    real, calls = check.steady_rate, []

    def flaky(*args: Any, **kwargs: Any) -> float:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("out of memory in the first mode")
        return real(*args, **kwargs)

    monkeypatch.setattr(check, "steady_rate", flaky)
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="accel")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 1 and last.startswith("gpu-check FAILED in ")
    lost = "accel eager batch 8 failed: RuntimeError: out of memory in the first mode"
    assert last.endswith(f"; failed: accel ({lost})")
    assert results["failed"] == {"accel": [lost]} and results["accel"]["failed"] == [lost]
    rows = results["accel"]["rows"]
    assert math.isnan(rows[0]["images_per_s"]) and rows[1]["images_per_s"] > 0  # the next row still measured


def test_a_phase_that_would_overrun_the_deadline_is_skipped_and_the_check_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GPU_CHECK_DEADLINE_S: a phase whose estimate exceeds the time left is not started, but named in the log and
    the JSON, and the check exits 3 (never PASSED): a lease cut short must not read as a full pass."""
    import benchmarks.gpu_check as check

    estimates = {**check.PHASE_ESTIMATE_S["cpu"], "moe": 0, "accel": 1e6}
    monkeypatch.setitem(check.PHASE_ESTIMATE_S, "cpu", estimates)
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="moe,accel", GPU_CHECK_DEADLINE_S="600")
    printed = capsys.readouterr().out
    assert code == check.EXIT_SKIPPED == 3
    assert list(results["seconds"]) == ["moe"] and "accel" not in results
    assert results["phases"] == ["moe", "accel"] and results["deadline_s"] == 600
    assert list(results["skipped"]) == ["accel"] and results["skipped"]["accel"].startswith("deadline: ")
    assert (
        "[accel: skipped: deadline: " in printed and "about 1000000 s expected (GPU_CHECK_DEADLINE_S=600)]" in printed
    )
    last = printed.strip().splitlines()[-1]
    assert last.startswith("gpu-check INCOMPLETE in ") and last.endswith(
        "; skipped for the deadline: accel (not a full pass)"
    )


def test_without_a_deadline_every_phase_asked_for_runs_whatever_its_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.gpu_check as check

    monkeypatch.setitem(check.PHASE_ESTIMATE_S, "cpu", dict.fromkeys(check.PHASES, 1e6))
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="moe")
    assert code == 0 and list(results["seconds"]) == ["moe"] and results["skipped"] == {}


def test_the_phase_estimates_cover_every_phase_on_each_device() -> None:
    from benchmarks.gpu_check import PHASE_ESTIMATE_S, PHASES

    assert {device: set(table) for device, table in PHASE_ESTIMATE_S.items()} == {
        "cuda": set(PHASES),
        "cpu": set(PHASES),
    }


def test_a_count_of_jobs_at_once_that_fails_keeps_the_counts_before_it_and_auto_never_picks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On "CUDA" (its name faked, the pool a stand-in): 1 job at once completes, the second job of 2 at once runs out
    of memory. The completed count is kept and written to the measurement file, 4 is not tried, the phase lists the
    failure (it raised before, losing the measured counts and the file). Jobs per hour are timed from the jobs'
    "start" reports, after their workers' imports."""
    import time

    import torch

    import benchmarks.gpu_check as check
    from usagg.engine.progress import Progress
    from usagg.execute import pool
    from usagg.execute.base import call_job
    from usagg.projection import choose_jobs_per_gpu, read_measurement

    device_name = "NVIDIA H100 80GB HBM3"
    monkeypatch.setenv("USAGG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPU_CHECK_STUDY_ACCEL", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: device_name)
    tried = []

    def out_of_memory(store_root: str, job_id: str) -> str:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def stand_in(self: Any, job_ids: list[str], fn: Any, on_event: Any = None, on_progress: Any = None) -> Any:
        k = self.jobs_per_device
        tried.append(k)
        time.sleep(0.3)  # the workers' imports: not timed
        for job_id in job_ids:
            on_progress(Progress(job_id, "start", 0, 1, 0, 0))
        time.sleep(0.05)
        states = {}
        for i, job_id in enumerate(job_ids):
            run = out_of_memory if (k, i) == (2, 1) else (lambda *_: "done")
            states[job_id], event, info = call_job(run, self.store_root, job_id)
            on_event(job_id, event, info)
        return states

    monkeypatch.setattr(pool.PoolExecutor, "run", stand_in)
    cfg = {**check._settings("cpu"), "jpg_counts": (1, 2, 4)}
    out = check.jobs_per_gpu_rates(tmp_path, cfg, "cuda")
    assert tried == [1, 2]
    assert list(out["jobs_per_hour"]) == [1] and out["chosen"] == 1
    assert out["jobs_per_hour"][1] == pytest.approx(3600 / out["timed_s"][1])
    assert out["timed_s"][1] < 0.3 < out["wall_s"][1]  # the stand-in's imports are outside the timed span
    assert len(out["failed"]) == 1 and out["failed"][0].startswith("jobs_per_gpu: 2 at once failed: TS-fetal_head")
    assert out["failed"][0].endswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    rates = read_measurement(device_name, torch.__version__)
    assert out["file"] and rates == {1: pytest.approx(out["jobs_per_hour"][1], rel=1e-3)}
    assert choose_jobs_per_gpu(rates) == 1  # auto reads only the counts that completed
    check.print_jobs_per_gpu(out)
    printed = capsys.readouterr().out
    assert "  jobs_per_gpu: 2 at once failed: " in printed and "auto would choose 1; measurement file: " in printed


def test_flops_are_counted_on_what_each_loop_gives_its_step(tmp_path: Path) -> None:
    """A steady loop trains on trunk tokens (its frozen blocks never run): its FLOPs are counted on them, not on
    pixels (+18 % on the H100's AU model). A whole job's are weighted by the share of rows its trunk served, read
    from the line its log has."""
    import torch

    from benchmarks.gpu_check import STUDY, TASKS, _settings, au_job, flops_per_image, job_gflop, trunk_served
    from usagg.model.m2dino import build_model

    cfg = _settings("cpu")
    (tmp_path / "study.yaml").write_text(STUDY.format(root=tmp_path, tasks=TASKS, name="f", paradigms="[AU]", **cfg))
    job = au_job(tmp_path)
    model = build_model(job.model, job.tasks, job.moe)
    cpu = torch.device("cpu")
    pixels = flops_per_image(model, job.tasks, cfg["size"], cpu)
    tokens = flops_per_image(model, job.tasks, cfg["size"], cpu, tokens=True)
    assert 0 < tokens < pixels
    line = "INFO usagg.engine.job: 54 of 72 training samples (75.0 %) served from the frozen trunk\n"
    assert trunk_served(line) == 0.75 and trunk_served("no trunk here\n") is None
    assert job_gflop(model, job.tasks, cfg["size"], cpu, 0.75) == pytest.approx((0.75 * tokens + 0.25 * pixels) / 1e9)
    assert job_gflop(model, job.tasks, cfg["size"], cpu, None) == pytest.approx(pixels / 1e9)


class _Killed(BaseException):
    """The lease's time limit stopping the check mid-phase (SIGTERM: no `except Exception` sees it)."""


@pytest.mark.slow  # five small jobs on the CPU: about 4 s
def test_a_jobs_phase_cut_by_the_time_limit_keeps_the_rows_it_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed in its last job (compiled-step-graphs' cold compile, on a GPU), the jobs phase leaves in the JSON the
    jobs it ran, the step-graphs job's verdict against eager included, and the lease names it cut after them; before,
    its rows came back only with the whole phase, and a cut lost them all."""
    import subprocess
    import sys

    from usagg.engine import runner

    real, calls = runner.run_one, []

    def killed_at_the_sixth_job(*args: Any, **kwargs: Any) -> str:
        calls.append(kwargs.get("accel"))
        if len(calls) == 6:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_one", killed_at_the_sixth_job)
    with pytest.raises(_Killed):
        _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="jobs")
    assert calls[-1] == "compiled-step-graphs"
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "jobs" not in results and "jobs" not in results["seconds"]
    rows = results["so_far"]["jobs"]
    assert [r["job"].partition(" ")[2] for r in rows] == ["", "", "", "eager again", "step-graphs"]
    assert all(r["state"] == "done" for r in rows)
    assert (
        "repeat_gap" in rows[3] and rows[4]["loss_gap"] == 0 and rows[4]["matches_eager"] is True
    )  # the CPU runs it eager
    verdict = Path(__file__).resolve().parents[1] / "tools" / "gpu_lease_verdict.py"
    done = subprocess.run([sys.executable, str(verdict), str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 3
    assert done.stdout == (
        "gpu-lease: a partial check, not a full pass: gpu-check phases jobs cut by its time limit after 5 rows "
        "(kept in so_far)\n"
    )


def test_a_finished_phase_leaves_no_rows_so_far(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, results = _check(tmp_path, monkeypatch, GPU_CHECK_PHASES="moe")
    assert code == 0 and results["so_far"] == {} and not (tmp_path / "gpu_check.json.part").exists()

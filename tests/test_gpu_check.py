"""`make gpu-check` without a GPU: its whole flow at a tiny size on the CPU, and its refusals (the script gets
one short run on a lent GPU, so its wiring is tested here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _check(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check"],
        cwd=ROOT,
        env={**os.environ, "GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_JSON": str(out), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return run, json.loads(out.read_text()) if out.is_file() else {}


@pytest.mark.slow  # four small jobs, the benches and the profile on the CPU: about 20 s
def test_every_phase_runs_on_the_cpu_and_reports(tmp_path: Path) -> None:
    run, results = _check(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert set(results["seconds"]) == {"jobs", "moe", "projection", "agreement", "profile", "accel"}
    rows, jobs_ok = results["jobs"]
    assert jobs_ok and [r["state"] for r in rows] == ["done"] * 4
    assert rows[-1]["job"].endswith("graphs+aff") and rows[-1]["job"].startswith("AU-")
    assert all(r["gflop_per_image"] > 0 and r["mfu"] is None for r in rows)  # no bf16 peak for a CPU
    agreement, agree_ok = results["agreement"]
    assert agree_ok and {r["run"].split()[1] for r in agreement} == {"fp32", "bf16"}
    assert [(r["mode"], r["batch"]) for r in results["accel"]["rows"]] == [("eager", 8), ("eager", 32)]
    assert list(results["projection"]["modes"]) == ["eager"] and results["projection"]["total_hours"] > 0
    assert "gpu-check PASSED" in run.stdout


@pytest.mark.parametrize(("name", "value"), [("GPU_CHECK_PHASES", "jobs,warp"), ("GPU_CHECK_ACCEL", "graph")])
def test_an_unknown_phase_or_mode_is_refused_before_any_work(
    tmp_path: Path, name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (the refusal comes before any work, so a subprocess would only add its start-up)."""
    from benchmarks.gpu_check import main

    out = tmp_path / "gpu_check.json"
    for key, setting in {"GPU_CHECK_DEVICE": "cpu", "GPU_CHECK_JSON": str(out), name: value}.items():
        monkeypatch.setenv(key, setting)
    assert main() == 2 and not out.exists()
    assert f"in {name}; choose from" in capsys.readouterr().out


@pytest.mark.slow  # a real phase in a fresh process
def test_one_chosen_phase_runs_alone(tmp_path: Path) -> None:
    run, results = _check(tmp_path, GPU_CHECK_PHASES="moe")
    assert run.returncode == 0, run.stdout[-2000:]
    assert set(results["seconds"]) == {"moe"} and results["moe"]["time_ratio"] > 0


def test_utilisation_above_one_is_an_error_not_a_figure() -> None:
    from benchmarks.gpu_check import peak_bf16, utilisation

    peak = peak_bf16("NVIDIA H200")
    assert peak == 989e12 and peak_bf16("NVIDIA H100 PCIe") == 756e12 and peak_bf16("Some card") is None
    assert utilisation(30.19, 570.9, peak) == pytest.approx(0.017427, rel=1e-4)  # the H200 AU job, 2026-11-28
    assert utilisation(30.19, 570.9, None) is None
    with pytest.raises(ValueError, match=r"MFU .* > 1"):
        utilisation(30.19, 570.9, 2.72)  # a peak in GiB, not FLOP/s: the bug the first H200 run printed

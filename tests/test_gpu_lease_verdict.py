"""`make gpu-lease` on a machine whose CUDA is not visible fails with one line (tools/gpu_lease_verdict.py): its
gpu-check exits 0 there ("nothing to check here") and its cuda tests all skip, which read as a success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_lease_verdict.py"

NO_GPU_CHECK = "gpu-check: no CUDA device visible; nothing to check here (exit 0). Run it on a machine with a GPU.\n"
GPU_CHECK = "gpu-check on NVIDIA H100 80GB HBM3, torch 2.9.0: dinov3_small at 224 px, bf16, 2 epochs, batch 32\n"
TESTS = ("test_the_cuda_random_state_a_checkpoint_keeps_gives_the_same_draws_again", "test_x[graphs]", "test_y")


def _tests_log(*verdicts: str) -> str:
    """A `pytest -v -rf` log as gpu-lease writes it: a line per test as it ends, the failures, then the summary."""
    ended = list(zip(TESTS, verdicts, strict=False))
    lines = [f"tests/test_cuda_path.py::{t} {v} [{100 * (i + 1) // len(ended):3d}%]" for i, (t, v) in enumerate(ended)]
    failed = [f"FAILED tests/test_cuda_path.py::{t} - AssertionError" for t, v in ended if v == "FAILED"]
    return "\n".join(["collected 17 items / 8 deselected / 9 selected", *lines, *failed, "= 3 done in 3.19s ="]) + "\n"


def _lease(tmp_path: Path, check: str, tests: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "gpu_check.log").write_text(check)
    (tmp_path / "cuda_tests.log").write_text(tests)
    return subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("check", "verdicts", "why"),
    [
        (NO_GPU_CHECK, ("SKIPPED", "SKIPPED", "SKIPPED"), "gpu-check saw no CUDA device"),
        (NO_GPU_CHECK, (), "gpu-check saw no CUDA device"),
        (GPU_CHECK, ("SKIPPED", "SKIPPED", "SKIPPED"), "all 3 cuda tests skipped"),
    ],
)
def test_a_lease_that_saw_no_cuda_fails_with_one_line(
    tmp_path: Path, check: str, verdicts: tuple[str, ...], why: str
) -> None:
    tests = _tests_log(*verdicts) if verdicts else ""
    done = _lease(tmp_path, check, tests)
    assert done.returncode == 1
    assert done.stdout == f"gpu-lease: no CUDA device visible: this lease measured nothing ({why})\n"


@pytest.mark.parametrize(
    "verdicts", [("PASSED", "SKIPPED", "SKIPPED"), ("FAILED", "SKIPPED", "SKIPPED"), ("PASSED", "PASSED", "PASSED")]
)
def test_a_lease_that_ran_on_a_gpu_leaves_the_verdict_to_the_exit_codes(
    tmp_path: Path, verdicts: tuple[str, ...]
) -> None:
    """A test skipped for its GPU's generation (sm 8.x) is no sign of a missing GPU; a failure fails the lease by
    pytest's own exit code; a cut run that logged no verdict yet by the time limit's."""
    for tests in (_tests_log(*verdicts), ""):
        done = _lease(tmp_path, GPU_CHECK, tests)
        assert done.returncode == 0 and done.stdout == ""


def test_without_its_folder_it_says_how_to_call_it() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip() == "python tools/gpu_lease_verdict.py GPU_OUT"

"""A lease (tools/gpu_lease.sh, `make gpu-lease`) whose cuda tests failed fails naming them, partial or not
(tools/gpu_lease_verdict.py); one on a machine whose CUDA is not visible fails with one line: its gpu-check exits 0
there ("nothing to check here") and its cuda tests all skip, which read as a success; one whose gpu-check left
phases out names them. The lease script's one budget and exit code, with a stand-in Python (a lease's check and
tests take minutes on a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_lease_verdict.py"
LEASE = REPO / "tools" / "gpu_lease.sh"

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


@pytest.mark.parametrize("verdicts", [("PASSED", "SKIPPED", "SKIPPED"), ("PASSED", "PASSED", "PASSED")])
def test_a_lease_that_ran_on_a_gpu_leaves_the_verdict_to_the_exit_codes(
    tmp_path: Path, verdicts: tuple[str, ...]
) -> None:
    """A test skipped for its GPU's generation (sm 8.x) is no sign of a missing GPU; a cut run that logged no verdict
    yet is left to the time limit's exit code."""
    for tests in (_tests_log(*verdicts), ""):
        done = _lease(tmp_path, GPU_CHECK, tests)
        assert done.returncode == 0 and done.stdout == ""


def test_failed_cuda_tests_fail_the_lease_named_once_each_and_first(tmp_path: Path) -> None:
    """Counted from the `-v` lines (a run cut by its time limit logged them) and the `-rf` summary, each test once;
    said before the partial check's line, which a default lease always has: the failure decides the exit code."""
    (tmp_path / "gpu_check.json").write_text(json.dumps({"phases": ["bare", "moe"], "seconds": {"bare": 80}}))
    tests = _tests_log("FAILED", "PASSED", "FAILED") + "tests/test_cuda_path.py::test_z ERROR [100%]\n"
    done = _lease(tmp_path, GPU_CHECK, tests)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "gpu-lease: cuda tests failed (3): test_the_cuda_random_state_a_checkpoint_keeps_gives_the_same_draws_again "
        "FAILED, test_y FAILED, test_z ERROR",
        "gpu-lease: a partial check, not a full pass: gpu-check phases moe not reached (cut by its time limit)",
    ]


def test_without_its_folder_it_says_how_to_call_it() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stderr.strip() == "python tools/gpu_lease_verdict.py GPU_OUT"


@pytest.mark.parametrize(
    ("results", "said"),
    [
        (
            {"phases": ["bare", "moe", "jobs"], "seconds": {"bare": 80}, "skipped": {"moe": "deadline: 3 s left"}},
            "moe skipped for its deadline; jobs not reached (cut by its time limit)",
        ),
        ({"phases": ["bare", "moe"], "seconds": {"bare": 80, "moe": 1}, "skipped": {}}, None),
        ({"phases": ["bare"], "seconds": {}, "skipped": {"bare": "deadline"}}, "bare skipped for its deadline"),
        (
            {"phases": ["bare", "jobs", "profile"], "seconds": {"bare": 80}, "so_far": {"jobs": [{}, {}, {}]}},
            "jobs cut by its time limit after 3 rows (kept in so_far); profile not reached (cut by its time limit)",
        ),
    ],
)
def test_a_lease_whose_check_left_phases_out_names_them(tmp_path: Path, results: dict, said: str | None) -> None:
    """gpu_check.json lists the phases asked for: one skipped for GPU_CHECK_DEADLINE_S, or never reached because the
    lease's limit cut the check, makes the lease a partial check, exit 3 as gpu-check's (its exit code, 3 or 124,
    does not say which); a phase cut while it ran says how many of its rows it kept."""
    (tmp_path / "gpu_check.json").write_text(json.dumps(results))
    done = _lease(tmp_path, GPU_CHECK, _tests_log("PASSED", "PASSED", "PASSED"))
    if said is None:
        assert done.returncode == 0 and done.stdout == ""
    else:
        assert done.returncode == 3
        assert done.stdout == f"gpu-lease: a partial check, not a full pass: gpu-check phases {said}\n"


def test_a_json_cut_while_being_written_leaves_the_verdict_to_the_exit_codes(tmp_path: Path) -> None:
    (tmp_path / "gpu_check.json").write_text('{"phases": ["bare", "mo')
    done = _lease(tmp_path, GPU_CHECK, _tests_log("PASSED"))
    assert done.returncode == 0 and done.stdout == ""


STAND_IN = """#!/usr/bin/env bash
# A lent machine's Python as tools/gpu_lease.sh calls it: gpu-check and pytest stand-ins, the verdict for real.
case "$1 $2" in
"-m benchmarks.gpu_check")
    echo "deadline $GPU_CHECK_DEADLINE_S, compiled code in $TORCHINDUCTOR_CACHE_DIR"
    case "$STAND_IN_CHECK" in
    hang) exec sleep 60 ;;
    skip) echo '{{"phases": ["bare", "moe"], "seconds": {{"bare": 1}}, "skipped": {{"moe": "x"}}}}' >"$GPU_CHECK_JSON"
        exit 3 ;;
    crash) kill -SEGV $$ ;;
    esac
    echo "gpu-check PASSED" ;;
"-m pytest")
    case "$STAND_IN_TESTS" in
    hang) exec sleep 60 ;;
    fail) echo "tests/test_cuda_path.py::test_y[step-graphs] FAILED [100%]"
        echo "FAILED tests/test_cuda_path.py::test_y[step-graphs] - AssertionError"
        exit 1 ;;
    none) echo "collected 9 items / 9 deselected / 0 selected"
        exit 5 ;;
    esac
    echo "tests/test_cuda_path.py::test_y PASSED [100%]" ;;
*) exec {python} "$@" ;;
esac
"""


def _run_lease(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """tools/gpu_lease.sh with the stand-in Python (GPU_PY), its logs in tmp_path/out; and its wall seconds."""
    python = tmp_path / "python"
    python.write_text(STAND_IN.format(python=sys.executable))
    python.chmod(0o755)
    (tmp_path / "cache" / "jobs_per_gpu").mkdir(parents=True)
    (tmp_path / "cache" / "jobs_per_gpu" / "nvidia-h100-80gb-hbm3.json").write_text("{}")
    ours = ("GPU_LEASE_", "GPU_CHECK_", "TORCHINDUCTOR_CACHE_DIR")
    settings = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    settings |= {"GPU_PY": str(python), "GPU_OUT": str(tmp_path / "out"), "USAGG_CACHE": str(tmp_path / "cache")}
    settings |= {"STAND_IN_CHECK": "", "STAND_IN_TESTS": "", **env}
    t0 = time.perf_counter()
    done = subprocess.run(["bash", str(LEASE)], cwd=REPO, env=settings, capture_output=True, text=True, check=False)
    return done, time.perf_counter() - t0


def test_the_lease_gives_the_check_its_share_as_a_deadline_and_the_tests_the_rest(tmp_path: Path) -> None:
    done, _ = _run_lease(tmp_path)
    out = tmp_path / "out"
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(
        "gpu-lease: 320 s in all: gpu-check until 230 s (phases started until 220 s), the cuda tests the rest\n"
    )
    assert "gpu-lease: the cuda tests get 3" in done.stdout  # 310 s less the seconds the check took
    assert (out / "gpu_check.log").read_text() == (
        "deadline 220, compiled code in /tmp/usagg-inductor\ngpu-check PASSED\n"  # it outlives the check
    )
    assert "::test_y PASSED" in (out / "cuda_tests.log").read_text()
    assert (out / "jobs_per_gpu" / "nvidia-h100-80gb-hbm3.json").is_file()
    assert "gpu-lease: gpu-check exit 0, cuda tests exit 0 (124: cut by its time limit) after " in done.stdout


def test_a_lease_whose_check_skipped_phases_exits_with_the_checks_code_and_names_them(tmp_path: Path) -> None:
    done, _ = _run_lease(tmp_path, STAND_IN_CHECK="skip")
    assert done.returncode == 3
    assert done.stdout.endswith(
        "gpu-lease: a partial check, not a full pass: gpu-check phases moe skipped for its deadline\n"
    )


@pytest.mark.parametrize(
    ("tests", "said"),
    [
        ("fail", "cuda tests exit 1 (124: cut by its time limit)"),
        ("none", "cuda tests exit 5 (124: cut by its time limit)"),
    ],
)
def test_failed_cuda_tests_fail_a_partial_lease(tmp_path: Path, tests: str, said: str) -> None:
    """A default lease's check is partial by design (exit 3): failed cuda tests, named first, or none selected
    (pytest's 5; all skipped is its 0), still fail the lease; until 2026-12-07 the check's 3 came first and a lease
    whose cuda tests all failed ended as a clean one did."""
    done, _ = _run_lease(tmp_path, STAND_IN_CHECK="skip", STAND_IN_TESTS=tests)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"gpu-lease: gpu-check exit 3, {said}" in done.stdout
    failed = "gpu-lease: cuda tests failed (1): test_y[step-graphs] FAILED\n"
    assert (failed in done.stdout) == (tests == "fail")
    assert done.stdout.endswith(
        "gpu-lease: a partial check, not a full pass: gpu-check phases moe skipped for its deadline\n"
    )


def test_a_folder_for_compiled_code_the_user_chose_is_kept(tmp_path: Path) -> None:
    done, _ = _run_lease(tmp_path, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"compiled code in {tmp_path / 'inductor'}\n" in (tmp_path / "out" / "gpu_check.log").read_text()


@pytest.mark.slow  # the stand-ins hang until the lease's limits stop them: about 5 s
def test_a_lease_ends_within_its_budget_when_check_and_tests_hang(tmp_path: Path) -> None:
    """The check is cut at its share, the tests at what is left: the whole lease, 16 s here, never runs past it
    (the check's and the tests' limits were separate, 360 + 190 s, past any one short lease)."""
    done, wall = _run_lease(
        tmp_path, GPU_LEASE_S="16", GPU_LEASE_TESTS_S="13", STAND_IN_CHECK="hang", STAND_IN_TESTS="hang"
    )
    assert done.returncode == 124 and wall < 16
    assert "gpu-check until 3 s (phases started until 1 s)" in done.stdout
    assert "gpu-lease: gpu-check exit 124, cuda tests exit 124 (124: cut by its time limit)" in done.stdout


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"GPU_LEASE_S": "abc"}, "GPU_LEASE_S=abc: expected whole seconds"),
        ({"GPU_LEASE_TESTS_S": "-5"}, "GPU_LEASE_TESTS_S=-5: expected whole seconds"),
        ({"GPU_LEASE_S": "80"}, "GPU_LEASE_TESTS_S=90 leaves gpu-check nothing of GPU_LEASE_S=80"),
    ],
)
def test_a_budget_that_is_no_whole_number_of_seconds_is_refused_before_anything_runs(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    done, _ = _run_lease(tmp_path, **env)
    assert done.returncode == 2 and said in done.stderr and "unbound" not in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_a_check_that_crashes_fails_the_lease(tmp_path: Path) -> None:
    """A segfault or abort in gpu-check (139, 134) is a failure, exit 1, not a code of its own."""
    done, _ = _run_lease(tmp_path, STAND_IN_CHECK="crash")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "gpu-lease: gpu-check exit 139," in done.stdout

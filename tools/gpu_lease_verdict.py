"""The last word of a lease (tools/gpu_lease.sh, `make gpu-lease`): failed cuda tests first, then a lease on which
CUDA was not visible (it measured nothing), then one whose gpu-check did not run every phase asked for (a partial
check).

A default lease is partial by design, so its exit codes alone never said that cuda tests failed: this counts the
tests the log says FAILED or ERROR (`pytest -v` logs each as it ends, so a run cut by its time limit counts too),
names them first and exits 1. gpu-check exits 0 where no CUDA device is visible ("nothing to check here": run by
hand on any machine), and pytest exits 0 when every cuda test is skipped; on a lent GPU machine either means its
CUDA is broken (a driver, a torch built for another CUDA, an empty CUDA_VISIBLE_DEVICES), so the lease must not
read as a success: one line, exit 1. Else, where gpu_check.json lists phases asked for that never ran (skipped for
GPU_CHECK_DEADLINE_S, or cut by the lease's limit, with the rows a cut phase had measured kept in its `so_far`),
prints which and exits 3, gpu-check's own code for a check that skipped phases: their exit codes (3, 124) say so
too, but not which. Else prints nothing. Standard library only: it runs under the lent machine's own Python (GPU_PY).

    python tools/gpu_lease_verdict.py GPU_OUT
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

NO_CUDA = "no CUDA device visible: this lease measured nothing"
PARTIAL = "a partial check, not a full pass"
FAILED_TESTS = "cuda tests failed"
#: The exit code of a partial check (gpu-check's for skipped phases): no failure, no full pass either.
EXIT_PARTIAL = 3
#: What benchmarks/gpu_check.py prints, and exits 0 after, when torch sees no CUDA device.
CHECK_SAW_NONE = "no CUDA device visible; nothing to check here"
#: A test's verdict as `pytest -v` logs it when the test ends: `tests/x.py::test_y[mode] PASSED   [ 50%]`.
VERDICT = re.compile(r"^\S+::\S+ (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b", re.M)
#: A test that failed, by its `-v` line or the `-rf` summary's (`FAILED tests/x.py::test_y - AssertionError`).
FAILURE = re.compile(r"^(?:(\S+::\S+) (FAILED|ERROR)\b|(FAILED|ERROR) (\S+::\S+))", re.M)


def verdicts(tests_log: str) -> Counter[str]:
    """How many tests ended with each verdict."""
    return Counter(VERDICT.findall(tests_log))


def failures(tests_log: str) -> list[str]:
    """Each test that failed or errored, once (its `-v` line and its summary line name it twice), as
    `test_y[mode] FAILED`, in the log's order."""
    seen: dict[str, None] = {}
    for test, word, word_first, test_after in FAILURE.findall(tests_log):
        seen[f"{(test or test_after).rpartition('::')[2]} {word or word_first}"] = None
    return list(seen)


def nothing_measured(check_log: str, tests_log: str) -> str | None:
    """Why the lease measured nothing on a GPU (None: it did)."""
    if CHECK_SAW_NONE in check_log:
        return "gpu-check saw no CUDA device"
    seen = verdicts(tests_log)
    if seen and set(seen) == {"SKIPPED"}:
        return f"all {seen['SKIPPED']} cuda tests skipped"
    return None


def unfinished(results: dict[str, Any]) -> str | None:
    """Which phases gpu-check was asked for and did not run, by gpu_check.json (None: it ran them all)."""
    ran = results.get("seconds") or {}
    skipped = [p for p in results.get("skipped") or {} if p not in ran]
    cut = [p for p in results.get("phases") or [] if p not in ran and p not in skipped]
    so_far = results.get("so_far") or {}  # the rows a phase cut while it ran had measured
    parts = [f"{', '.join(skipped)} skipped for its deadline"] if skipped else []
    parts += [f"{p} cut by its time limit after {len(so_far[p])} rows (kept in so_far)" for p in cut if so_far.get(p)]
    unreached = [p for p in cut if not so_far.get(p)]
    parts += [f"{', '.join(unreached)} not reached (cut by its time limit)"] if unreached else []
    return "; ".join(parts) or None


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    tests_log = _read(out / "cuda_tests.log")
    failed = failures(tests_log)
    if failed:
        print(f"gpu-lease: {FAILED_TESTS} ({len(failed)}): {', '.join(failed)}", flush=True)
    why = nothing_measured(_read(out / "gpu_check.log"), tests_log)
    if why is not None:
        print(f"gpu-lease: {NO_CUDA} ({why})", flush=True)
        return 1
    try:
        results = json.loads(_read(out / "gpu_check.json") or "{}")
    except json.JSONDecodeError:  # cut while writing it: the logs and exit codes tell the rest
        results = {}
    partial = unfinished(results) if isinstance(results, dict) else None
    if partial is not None:
        print(f"gpu-lease: {PARTIAL}: gpu-check phases {partial}", flush=True)
    return 1 if failed else (EXIT_PARTIAL if partial else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

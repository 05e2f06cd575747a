#!/usr/bin/env bash
# One device lease's whole GPU check under ONE time budget (docs/benchmarks.md, "GPU check"): gpu-check, then the
# cuda tests, every log in GPU_OUT, then the verdict (tools/gpu_lease_verdict.py). `make gpu-lease` calls it; a lent
# machine may lack GNU make, so it also runs alone:
#
#   GPU_PY=python3 GPU_OUT=$OUT bash tools/gpu_lease.sh        (or: bash tools/gpu_lease.sh python3 "$OUT")
#
# GPU_LEASE_S (default 320): what the whole lease may take from this script's start; a lent machine's command
# installs the wheels first (a few seconds). A lease gets 15 minutes of device time, machine starts included, and
# runs twice (before and after a session's changes): separate time limits for the check and the tests (360 + 190
# s) let one lease run to 570 s. gpu-check is cut at GPU_LEASE_S - GPU_LEASE_TESTS_S (default 90) and given
# GPU_CHECK_DEADLINE_S 10 s less (its imports and clean-up): it starts no phase that its estimate says would not
# fit (benchmarks/gpu_check.py, PHASE_ESTIMATE_S) and exits 3 when it skipped one, so a short lease never reads
# as a full pass. The cuda tests get what is left, less 10 s for their stop and the verdict; they are stopped
# with SIGINT, on which pytest still prints its failures and durations (SIGTERM ends it with neither), and -v logs
# each test's verdict as it ends. Whole logs go to files (a `| tail` cut by a time limit returns nothing); the
# jobs_per_gpu measurement file comes back in GPU_OUT/jobs_per_gpu.
#
# TORCHINDUCTOR_CACHE_DIR is /tmp/usagg-inductor unless set: usagg keeps a folder the user chose, so compiled code
# outlives the check's temporary folder and a second lease on a still-warm machine reuses it.
#
# Exit: 1 where anything failed, whatever else happened: gpu-check failed (1, or crashed: 134, 139), pytest
# failed (any code but 0 and a cut by its time limit, 124 or 137: 5, no cuda test selected, is a failure too), or
# the verdict counted FAILED or ERROR tests in their log (a cut run's too) or saw no CUDA device
# (tools/gpu_lease_verdict.py). Else gpu-check's code where it is not 0 (3 phases skipped for the deadline, 124 cut), else the tests' (124: cut), else the
# verdict's (3: a partial check). A default lease is partial by design (its deadline is below the phases'
# estimates), so a failure must win over "partial": until 2026-12-07 gpu-check's 3 came first and a lease whose
# cuda tests all failed exited 3, as a clean one did.
set -u

py=${1:-${GPU_PY:-}}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
out=${2:-${GPU_OUT:-reports/gpu}}
budget=${GPU_LEASE_S:-320}
tests_share=${GPU_LEASE_TESTS_S:-90}
for setting in "GPU_LEASE_S=$budget" "GPU_LEASE_TESTS_S=$tests_share"; do
    case ${setting#*=} in
        '' | *[!0-9]*) echo "gpu-lease: $setting: expected whole seconds (GPU_LEASE_S 320, GPU_LEASE_TESTS_S 90)" >&2; exit 2 ;;
    esac
done
if [ "$tests_share" -ge "$budget" ]; then
    echo "gpu-lease: GPU_LEASE_TESTS_S=$tests_share leaves gpu-check nothing of GPU_LEASE_S=$budget" >&2
    exit 2
fi
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/usagg-inductor}
start=$SECONDS
mkdir -p "$out"
rm -f "$out/gpu_check.json" "$out/gpu_check.log" "$out/cuda_tests.log" # an earlier lease's would read as this one's

check_s=$((budget - tests_share))
deadline=$((check_s - 10))
if [ "$deadline" -lt 1 ]; then deadline=1; fi
echo "gpu-lease: ${budget} s in all: gpu-check until ${check_s} s (phases started until ${deadline} s), the cuda tests the rest"
GPU_CHECK_JSON=$out/gpu_check.json GPU_CHECK_DEADLINE_S=$deadline timeout -k 5 "$check_s" "$py" -m benchmarks.gpu_check \
    >"$out/gpu_check.log" 2>&1
check=$?
cp -r "${USAGG_CACHE:-$HOME/.cache/usagg}/jobs_per_gpu" "$out/" 2>/dev/null

left=$((budget - (SECONDS - start) - 10))
if [ "$left" -gt 0 ]; then
    echo "gpu-lease: the cuda tests get ${left} s"
    timeout -s INT -k 8 "$left" "$py" -m pytest -v -p no:cacheprovider -m cuda tests/test_cuda_path.py \
        -rf --tb=short --durations=0 >"$out/cuda_tests.log" 2>&1
    tests=$?
else
    echo "gpu-lease: no time left for the cuda tests" | tee "$out/cuda_tests.log"
    tests=124
fi

grep -v "NO PRETRAINED" "$out/gpu_check.log" | tail -n 40
tail -n 30 "$out/cuda_tests.log"
echo "gpu-lease: gpu-check exit $check, cuda tests exit $tests (124: cut by its time limit) after $((SECONDS - start)) s; logs in $out"
"$py" tools/gpu_lease_verdict.py "$out"
verdict=$?
case $tests in 0 | 124 | 137) ;; *) exit 1 ;; esac
case $check in 0 | 3 | 124 | 137) ;; *) exit 1 ;; esac # 1, or a crash (134 abort, 139 segfault): a failure
if [ "$verdict" -eq 1 ]; then exit 1; fi
if [ "$check" -ne 0 ]; then exit "$check"; fi
if [ "$tests" -ne 0 ]; then exit "$tests"; fi
exit "$verdict"

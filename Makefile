# usagg make targets. `make demo` and `make test` work on a fresh clone: both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
USAGG := $(VENV)/bin/usagg
# named for the editable mode (a venv installed before with the import hook reinstalls once)
STAMP := $(VENV)/.installed-compat
export HF_HUB_OFFLINE := 1

.PHONY: install test test-fast lint demo known-answer bench gpu-check gpu-lease gpu-wheels report-check clean

install: $(STAMP)

# uv (pip puts it in the venv) installs what pip would, downloading and unpacking in parallel: about a minute
# less from a cold cache, a third of pip's CPU (docs/benchmarks.md). It reads no pip configuration, so a
# constraint pip is given (pip.conf or PIP_CONSTRAINT, as `pip config list` shows them) is handed over; where
# uv is missing or fails, pip installs as before. --compile-bytecode: pip compiles at install, uv would leave it to
# each process, and where PYTHONDONTWRITEBYTECODE is set every process would compile torch's sources again.
# editable_mode=compat: a plain path entry, which type checkers follow to usagg's py.typed (setuptools' default
# import hook hides the package from mypy: a user's script saw every usagg type as Any).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	{ $(PY) -m pip install -q uv && \
	  UV_CONSTRAINT="$${UV_CONSTRAINT:-$$($(PY) -m pip config list | sed -n "s/^[^.]*\.constraint='\(.*\)'$$/\1/p")}" \
	  $(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -C editable_mode=compat -e '.[dev,slurm]'; } || \
	{ $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q --config-settings editable_mode=compat -e '.[dev,slurm]'; }
	touch $(STAMP)

# The full suite (CI runs it); tests marked cuda skip themselves without a GPU (tests/conftest.py).
# One pytest-xdist worker per core, each on one thread; PYTEST_WORKERS=0 runs it in this process.
PYTEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -p no:cacheprovider $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist worksteal)
test: install
	$(PYTEST)

# Everything but the slow tests (training runs, subprocess CLI runs, Slurm, packaging) and the CUDA ones.
test-fast: install
	$(PYTEST) -m "not slow and not cuda"

lint: install
	$(VENV)/bin/ruff check usagg tests benchmarks tools
	$(VENV)/bin/ruff format --check usagg tests benchmarks tools
	$(VENV)/bin/mypy usagg

demo: install
	$(USAGG) run studies/demo.yaml
	$(USAGG) status runs/demo
	$(USAGG) compare runs/demo --baseline TS
	$(USAGG) report runs/demo --out reports/demo
	$(USAGG) synth --image-size 64 --preview reports/demo/figures/synth_preview.png   # the size the demo trains at

# The known-answer studies (issue 28): effects planted in the synthetic data (usagg/data/synth/known.py), 5 and
# 10 seeds, declared in their expect: blocks; fails unless every expectation of both is met. studies/known.yaml: the
# grouping AG should find and a mark reader's loss under AU; studies/known_conflict.yaml: a conflict on the same
# scans, negative transfer under CG diluted under AU.
KNOWN_STUDIES := known known_conflict
known-answer: install
	@for s in $(KNOWN_STUDIES); do \
	  $(USAGG) run studies/$$s.yaml && \
	  $(USAGG) compare runs/$$s --baseline TS && \
	  $(USAGG) report runs/$$s --out reports/$$s || exit 1; \
	done
	@for s in $(KNOWN_STUDIES); do \
	  $(USAGG) compare runs/$$s --baseline TS --format json | $(PY) -c "import json, sys; \
	bad = [e['name'] + ': ' + ('not evaluated' if e['met'] is None else 'not met') \
	       for e in json.load(sys.stdin)['expectations'] if e['met'] is not True]; \
	sys.exit('known-answer ($$s): ' + '; '.join(bad) if bad else 0)" || exit 1; \
	done

# The HTML report in a real headless browser at 1280 and 390 px (Debian's chromium + chromedriver, installed
# here when missing; Selenium, a dev extra, drives them): no console errors, every image decodes, no sideways overflow.
# REPORT=reports/demo checks that report; without it, one written from the simulated 27-task study.
REPORT ?=
report-check: install
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
	$(PY) tools/report_check.py $(REPORT)

bench: install
	$(PY) -m benchmarks

# On a GPU box without package access, reuse its Python: make gpu-check GPU_PY=python3
GPU_PY ?=
gpu-check: $(if $(GPU_PY),,install)
	$(or $(GPU_PY),$(PY)) -m benchmarks.gpu_check

# One lease's whole GPU check, prepared (docs/benchmarks.md, "GPU check"): tools/gpu_lease.sh, under one time
# budget (GPU_LEASE_S, 320 s: a lease has 15 minutes of device time for two runs and their machine starts):
# gpu-check with a deadline (it starts no phase its estimate says will not fit, and exits 3 when it skipped one),
# then the cuda tests in the time left, each log whole in $(GPU_OUT); the jobs_per_gpu measurement file comes back
# in $(GPU_OUT)/jobs_per_gpu. A lease that saw no CUDA device fails with one line, one that skipped phases names
# them (tools/gpu_lease_verdict.py), where gpu-check alone exits 0. On a lent machine (after the wheels, see
# gpu-wheels; the image may lack make): GPU_PY=python3 GPU_OUT=$OUT bash tools/gpu_lease.sh
GPU_OUT ?= reports/gpu
gpu-lease: $(if $(GPU_PY),,install)
	GPU_PY=$(or $(GPU_PY),$(PY)) GPU_OUT=$(GPU_OUT) bash tools/gpu_lease.sh

# Wheels (Python 3.12, x86-64 Linux) of usagg's dependencies that a GPU box's own Python lacks, into .whl/
# (git-ignored): the lent GPU machines' image holds torch, timm, typer and the rest, not these (its package
# list of 2026-11-17). There: pip install --no-index --no-deps --target /tmp/site .whl/*.whl, then
# PYTHONPATH=/tmp/site make gpu-check GPU_PY=python3 (docs/benchmarks.md, "GPU check").
GPU_WHEELS ?= segmentation-models-pytorch==0.6.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 filelock==4.3.2
gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl $(GPU_WHEELS)

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info

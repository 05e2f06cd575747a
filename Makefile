# usagg make targets. `make demo` and `make test` work on a fresh clone: both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
USAGG := $(VENV)/bin/usagg
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1

.PHONY: install test test-fast lint demo bench gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,slurm]'
	touch $(STAMP)

# The full suite (CI runs it); tests marked cuda skip themselves without a GPU (tests/conftest.py).
test: install
	$(PY) -m pytest -q -p no:cacheprovider

# Everything but the slow tests (training runs, subprocess CLI runs, Slurm, packaging) and the CUDA ones.
test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow and not cuda"

lint: install
	$(VENV)/bin/ruff check usagg tests benchmarks
	$(VENV)/bin/ruff format --check usagg tests benchmarks

demo: install
	$(USAGG) run studies/demo.yaml
	$(USAGG) status runs/demo
	$(USAGG) compare runs/demo --baseline TS
	$(USAGG) report runs/demo --out reports/demo
	$(USAGG) synth --preview reports/demo/figures/synth_preview.png

bench: install
	$(PY) -m benchmarks

# On a GPU box without package access, reuse its Python: make gpu-check GPU_PY=python3
GPU_PY ?=
gpu-check: $(if $(GPU_PY),,install)
	$(or $(GPU_PY),$(PY)) -m benchmarks.gpu_check

clean:
	rm -rf runs .pytest_cache .ruff_cache build dist *.egg-info

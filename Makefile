# The two set-up commands a newcomer runs (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP  := $(VENV)/.installed

.PHONY: install test demo bench clean gpu-wheels gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23.1" "setuptools>=68" wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/segpipe demo -o demo_out

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

# GPU check (README, "Proving the GPU path"). On the GPU host there is no .venv and no package registry:
# python3 there holds torch; the wheels it lacks travel in .gpu-wheels/, prepared here by `make gpu-wheels`.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpu-wheels:
	$(GPU_PYTHON) benchmarks/gpu_check.py --prepare-only

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out "$${OUT:-gpu_check_out}"

clean:
	rm -rf $(VENV) demo_out .pytest_cache gpu_check_out

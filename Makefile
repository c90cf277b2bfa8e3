# The two set-up commands a newcomer runs (see README.md): `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install whenever pyproject.toml, setup.py or the C kernel changes (an editable install builds the kernel once).
STAMP  := $(VENV)/.installed

.PHONY: install test suite lint typecheck demo bench bench-audit clean gpu-wheels gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23.1" "setuptools>=68" wheel

$(STAMP): pyproject.toml setup.py evaluators/_kernel.c pipeline/core/_labelmap.c | $(BIN)/python
	$(BIN)/python -m pip install -e '.[test]'
	# Reference implementations the tests compare against, live. tidecv 1.0.1 declares opencv-python, which would
	# install a second cv2 over opencv-python-headless's, so it goes in without its declared dependencies (numpy,
	# pandas, matplotlib and pycocotools are ours already; appdirs and seaborn are what it imports besides).
	$(BIN)/python -m pip install "hotcoco==1.3.0"
	$(BIN)/python -m pip install --no-deps "tidecv==1.0.1" "appdirs>=1.4" "seaborn>=0.13"
	touch $(STAMP)

install: $(STAMP)

# The suite on one pytest-xdist worker per core (at most 4: each worker holds torch and its models, ~1.5 GB),
# a test file at a time so that a module's fixtures are built once, in the order tests/conftest.py gives
# (heavy files first) rather than xdist's by test count. `pytest` alone still runs everything in one process.
# https://pytest-xdist.readthedocs.io/en/stable/distribution.html
PYTEST_XDIST ?= -n auto --maxprocesses 4 --dist loadfile --no-loadscope-reorder
# ruff first (a second), then mypy beside the suite: mypy runs on one core, so on its own it would leave the
# other idle for its ~25 s (no cache in a fresh clone). `make test` fails when either fails.
test: lint
	@$(MAKE) --no-print-directory -j2 typecheck suite

suite: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_XDIST)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

# mypy maps files to modules by folder names (https://mypy.readthedocs.io/en/stable/running_mypy.html#mapping-file-paths-to-modules),
# not setuptools' package-dir; .ci/typecheck.py gives it each file with its module name from pyproject's mapping.
typecheck: $(STAMP)
	$(BIN)/python .ci/typecheck.py --cache-dir "$(VENV)/.mypy_cache"

demo: $(STAMP)
	$(BIN)/segpipe demo -o demo_out

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b --quick || exit 1; done

# The audit benchmark beside cleanlab, which it compares against when importable. cleanlab and what it pulls in
# (scikit-learn, scipy) go into a throwaway environment under .bench/ that sees .venv's packages through a .pth
# file (https://docs.python.org/3/library/site.html), so .venv keeps only what segpipe needs.
CLEANLAB_VENV := .bench/cleanlab-venv
bench-audit: $(STAMP)
	rm -rf $(CLEANLAB_VENV)
	$(BIN)/python -m venv --without-pip $(CLEANLAB_VENV)
	$(CLEANLAB_VENV)/bin/python -c "import site, sys; open(site.getsitepackages()[0] + '/segpipe_venv.pth', 'w').write('import site; site.addsitedir(%r)\n' % sys.argv[1])" \
		"$$($(BIN)/python -c 'import site; print(site.getsitepackages()[0])')"
	$(BIN)/python -m pip --python $(CLEANLAB_VENV)/bin/python install "cleanlab==2.9.0"
	$(CLEANLAB_VENV)/bin/python benchmarks/audit_recall.py --quick --demo

# GPU check (README, "Proving the GPU path"). On the GPU host there is no .venv and no package registry:
# python3 there holds torch; the wheels it lacks travel in .gpu-wheels/, prepared here by `make gpu-wheels`.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpu-wheels:
	$(GPU_PYTHON) benchmarks/gpu_check.py --prepare-only

gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py --out "$${OUT:-gpu_check_out}"

clean:
	rm -rf $(VENV) demo_out tutorial .pytest_cache gpu_check_out

# depthnet-jax: `make demo` and `make test` work on a fresh machine (they create .venv and install first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers: the suite is mostly single-threaded process start-ups and compiles, so 2 workers on
# 2 cores take about two thirds of the serial time. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2

.PHONY: venv lint test test-slow demo demo-import reference bench clean

venv: $(STAMP)

# The project itself in editable mode (depthnet_jax and tfds_stillbox importable from anywhere; edits take effect
# at once), after its dependencies: --no-deps, as requirements.txt is already installed.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -e . --no-deps
	touch $(STAMP)

# ruff (pinned in requirements-dev.txt, configured in pyproject.toml) over the whole tree.
lint: venv
	$(VENV)/bin/ruff check .

# pytest exits 5 when no test ran: that is a failure here, not a pass.
test: venv
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest ran no test" >&2; exit 1; fi; exit $$rc

test-slow: venv
	$(PY) -m pytest -m slow $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no slow tests defined"; exit 0; fi; exit $$rc

demo: venv
	$(PY) scripts/demo.py --out demo_out

# A reference model (docs/reference_models.md): RESOLUTION=64 (default), 128 or 256 builds synth<R>_large, trains
# configs/reference<R>.py (about 100 minutes on 2 CPU cores; resumes where it stopped), evaluates and exports it to
# reference_out/<R>/reference<R>. REFERENCE_ARGS="--steps 1000" runs the first 1000 steps of the same schedule.
RESOLUTION ?= 64
REFERENCE_ARGS ?=
reference: venv
	$(PY) scripts/reference.py --resolution $(RESOLUTION) --out reference_out/$(RESOLUTION) $(REFERENCE_ARGS)

demo-import: venv
	$(PY) scripts/import_demo.py --out demo_out/import

bench: venv
	$(PY) benchmarks/torch_parity.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/inference.py
	$(PY) benchmarks/checksums.py

clean:
	rm -rf demo_out .pytest_cache

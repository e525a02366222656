# cellseg: `make demo` (train and evaluate on the bundled sample), `make test` (what CI runs).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA ?= $(abspath ../shared/data)
TEST_ENV := CELLSEG_OFFLINE=1 WANDB_MODE=disabled CELLSEG_TEST_DATA=$(SHARED_DATA) OMP_NUM_THREADS=2
DEMO_LOGS := $(CURDIR)/logs/demo
# One experiment per method, each sized for a 2-core CPU on the bundled sample (data/sample).
DEMO_EXPERIMENTS ?= supervised_unet_sample s2l_unet_sample coin_cpu_sample cyclic_cpu_sample

.PHONY: install demo report test test-all bench lint clean help

help:
	@echo "make install   create $(VENV) with cellseg and its dependencies (idempotent)"
	@echo "make demo      train + evaluate the methods on the bundled sample (CPU, minutes)"
	@echo "make report    comparative report of the runs under RUNS (default logs/train) into REPORT (report/)"
	@echo "make test      the test suite CI runs (no slow or GPU tests)"
	@echo "make test-all  every test, including slow ones"
	@echo "make bench     the benchmark scripts (long; needs ../shared/data)"
	@echo "make lint      ruff"

install: $(VENV)/.installed

# torch/torchvision first and pinned: a plain `torch` requirement would pull a different build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	rm -rf $(DEMO_LOGS)
	for experiment in $(DEMO_EXPERIMENTS); do \
		$(PY) train.py experiment=$$experiment paths.log_dir=$(DEMO_LOGS) || exit 1; \
	done
	$(PY) -m cellseg.tasks.report $(DEMO_LOGS)/train --out $(DEMO_LOGS)/report

report: install
	$(PY) -m cellseg.tasks.report $(or $(RUNS),logs/train) --out $(or $(REPORT),report)

# Two workers keep both cores busy (one worker leaves ~40 % idle while subprocesses start); a module stays on one
# worker so its shared runs are built once. The slowest tests are listed to keep the suite's time in view.
TEST_WORKERS ?= 2
TEST_OPTS := -n $(TEST_WORKERS) --dist loadscope --durations=15

test: install
	$(TEST_ENV) $(PY) -m pytest -m "not slow and not gpu" -q $(TEST_OPTS)

test-all: install
	$(TEST_ENV) $(PY) -m pytest -q $(TEST_OPTS)

bench: install
	$(PY) benchmarks/metrics_speed.py --data-root $(SHARED_DATA)
	$(PY) benchmarks/supervised_monuseg.py --data-root $(SHARED_DATA)

lint: install
	$(PY) -m ruff check cellseg tests benchmarks data train.py eval.py infer.py

clean:
	rm -rf logs/demo .pytest_cache .ruff_cache

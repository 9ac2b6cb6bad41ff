# CCTF developer entry points. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test lint fmt bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CCTF needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: run the local fabric (3-node NATS cluster, 5 DNS servers, 5 agents, a coordinator). ARGS="--rounds 3 --json"
demo: install
	$(VENV)/bin/cctf demo $(ARGS)

## test: lint, type-check, then the whole test suite (real nats-server and DNS servers on loopback)
test: install lint
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy --strict cctf

fmt: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## bench: end-to-end latency and throughput against a same-run baseline (prints JSON)
bench: install
	$(PY) benchmarks/e2e.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info

# CCTF developer entry points. Every target installs what it needs into .venv first, from
# requirements.lock (hash-pinned: a fresh machine gets exactly what CI tested).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-stamp

.PHONY: install lock demo test lint fmt bench bench-load bench-identity clean

install: $(STAMP)

# Re-run only when the lock or pyproject.toml changed. `venv --clear` starts from an empty venv so
# a package dropped from the lock does not linger; `pip check` fails if pyproject.toml asks for a
# dependency the lock lacks (then: make lock).
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "CCTF needs Python >= 3.11")'
	@echo "installing $(LOCK) into $(VENV)" >&2
	@$(PYTHON) -m venv --clear $(VENV)
	@$(PY) -m pip install -qq --disable-pip-version-check --require-hashes --no-deps -r $(LOCK)
	@$(PY) -m pip install -qq --disable-pip-version-check --no-deps -e .
	@$(PY) -m pip check >/dev/null || { $(PY) -m pip check; echo "$(LOCK) does not satisfy pyproject.toml: run make lock" >&2; exit 1; }
	@touch $(STAMP)

## lock: re-resolve requirements.lock from pyproject.toml (all extras needed by make test), with hashes
lock:
	@test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install --quiet uv; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
		--generate-hashes -o $(LOCK)

## demo: run the local fabric (3-node NATS cluster, 5 DNS servers, 5 agents, a coordinator). ARGS="--rounds 3 --json"
demo: install
	@$(VENV)/bin/cctf demo $(ARGS)

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

## bench: end-to-end latency and throughput against a same-run baseline (prints JSON on stdout)
bench: install
	@$(PY) benchmarks/run.py $(ARGS)

## bench-load: the whole local fabric at N = 100, 300, 1000, 3000 names per 1 s round (JSON). ARGS="--quick"
bench-load: install
	@$(PY) benchmarks/load.py $(ARGS)

## bench-identity: identity decisions/s and p99 (library vs SDK vs HTTP gateway; JSON). ARGS="--quick"
bench-identity: install
	@$(PY) benchmarks/identity.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info

# One entry point for people and CI. `make run` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/edgesense/v1/*.proto)

.PHONY: setup run test check fmt lint typecheck protos envoy bench chaos clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# The tests' Sparkplug B encoder, independent of our decoder. Without its
	# dependencies: it pins paho-mqtt<2 for its MQTT client, which the tests
	# never use (they take its payload classes only), and the bridge needs paho 2.
	$(PY) -m pip install --quiet --no-deps 'pysparkplug==0.6.1'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/edgesense up --dev

# The suite runs in TEST_WORKERS processes (pytest-xdist; the machine's cores,
# at most 4): its tests wait on servers, brokers and subprocesses more than
# they compute, and two workers on 2 cores halve its wall time. A file's tests
# stay in one worker (--dist loadfile), so a module's cluster starts once.
# PYTEST_ARGS=-n0 runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

fmt: setup
	$(PY) -m ruff format services gateway-bridge tests bench

lint: setup
	$(PY) -m ruff format --check services gateway-bridge tests bench
	$(PY) -m ruff check services gateway-bridge tests bench
	$(VENV)/bin/lint-imports --no-cache --no-logo

typecheck: setup
	$(PY) -m mypy

check: lint typecheck test

protos: setup
	$(PY) -m edgesense.protogen services

envoy: setup
	$(PY) -m edgesense.envoygen deploy/envoy

# End-to-end benchmarks against the baseline forwarder (5-10 minutes on 2 cores; see README,
# Performance). ARGS=--postgres for PostgreSQL, ARGS=--quick for a short run,
# ARGS="--postgres --scale" for the scale-out phases alone (about four minutes).
bench: setup
	$(PY) -m bench.run $(ARGS)

# The chaos test at the issue's figures (README, Chaos): 20,000 readings at 400/s while
# bridges and delivery processes are killed every 3 s and PostgreSQL and Mosquitto restart;
# a little over a minute. CHAOS_EVENTS, CHAOS_RATE, CHAOS_KILL_EVERY and CHAOS_SEED change it,
# ARGS goes to pytest. `make test` runs the same test at 800/s.
CHAOS_EVENTS ?= 20000
CHAOS_RATE ?= 400
chaos: setup
	CHAOS_EVENTS=$(CHAOS_EVENTS) CHAOS_RATE=$(CHAOS_RATE) $(PY) -m pytest tests/chaos -q $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

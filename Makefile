# The two commands a newcomer needs:  make run   and   make test
# Both create .venv on first use. PYTHON must be 3.11 or newer.

PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=
# Test workers: two per core, at most 4 (TEST_JOBS=0 runs the suite in this process). Much
# of the suite waits on sockets, timers and the programs it starts, and a worker per core
# left the cores idle meanwhile (1.6 of 2 busy in CI); docs/testing.md has the figures.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); \
	echo $$((2 * n)))

.PHONY: run test bench lint clean help

help:
	@echo "make run     create .venv, install detour, run it with the built-in config (ARGS=--headless: no UI)"
	@echo "make test    create .venv with test extras, run the whole test suite"
	@echo "             (DETOUR_FUZZ_PROFILE=ci: 10,000 examples per property test, as CI runs)"
	@echo "make bench   run the side-by-side benchmarks (benchmarks/)"
	@echo "make clean   remove .venv and caches"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "detour needs Python 3.11 or newer (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[speed]'
	@touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[speed,test]'
	@touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[speed,test,bench]'
	@touch $@

run: $(VENV)/.installed
	$(BIN)/detour run $(ARGS)

# compileall first: the suite starts detour as a process some hundreds of times, and where
# PYTHONDONTWRITEBYTECODE is set each start would compile detour's modules again (importing
# them took 3.3 s of CPU without .pyc files, 1.1 s with); once they are current it only
# checks them. pytest keeps the test modules it rewrote (their asserts) as .pyc files too,
# unless PYTHONDONTWRITEBYTECODE is set: every worker collects the whole suite, and rewriting
# was half of a worker's collection (docs/testing.md), so it is unset for the run and a
# second `make test` finds them.
test: $(VENV)/.installed-test
	$(BIN)/python -m compileall -q helper transports
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(TEST_JOBS) --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/relay.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build dist *.egg-info

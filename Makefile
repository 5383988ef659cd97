# Two commands on a fresh machine:
#   make init    create .venv, install Halton Meter, set it up and start metering (halton-meter init)
#   make test    create .venv, install test dependencies and the contrib example plugin, run the suite
#   make bench   create .venv, install Halton Meter with the test extra, run the benchmark (bench/; about
#                20 minutes; BENCH_ARGS=--quick for a 3-minute smoke run)
# (make serve runs the meter in the foreground instead of as a service)

PYTHON ?= python3.12
# pyenv machines default to an older Python; this selects 3.12 where pyenv provides it and is ignored elsewhere.
export PYENV_VERSION ?= 3.12.1
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: init serve test bench install install-test install-bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null || { \
	  echo "Halton Meter needs Python 3.12 or newer: run 'make PYTHON=/path/to/python3.12 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml contrib/halton-meter-provider-example/pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]' -e contrib/halton-meter-provider-example
	@touch $@

# The benchmark needs trustme (its fake provider's CA) from the test extra, but not the contrib plugin.
$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

install-bench: $(VENV)/.installed-bench

init: install
	$(BIN)/halton-meter init --non-interactive $(INIT_ARGS)

serve: install
	$(BIN)/halton-meter serve

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV)

# Two commands on a fresh machine:
#   make init    install Halton Meter for your user (its own virtualenv, `halton-meter` on your PATH), set it
#                up and start metering (halton-meter init)
#   make test    create .venv-test, install test dependencies and the contrib example plugin, run the suite
#   make bench   install Halton Meter with the test extra in .venv, run the benchmark (bench/; about
#                20 minutes; BENCH_ARGS=--quick for a 3-minute smoke run)
# (make serve runs the meter from this clone in the foreground; make uninstall undoes make init)

PYTHON ?= python3.12
# pyenv machines default to an older Python; this selects 3.12 where pyenv provides it and is ignored elsewhere.
export PYENV_VERSION ?= 3.12.1
VENV ?= .venv
BIN := $(VENV)/bin
TEST_VENV ?= .venv-test
# Tests install the contrib example plugin (which claims llm.example.internal): never where the meter runs.
TEST_BIN := $(TEST_VENV)/bin
# `make init` installs a copy (not an editable link to this clone) in its own virtualenv, so moving, editing
# or checking out the clone never changes the running meter, and links the command into BIN_DIR.
APP_DIR ?= $(HOME)/.local/share/halton-meter/app
BIN_DIR ?= $(HOME)/.local/bin
APP_PIP_ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: init install-app uninstall serve test test-wheel bench install install-test install-bench clean python-check

python-check:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null || { \
	  echo "Halton Meter needs Python 3.12 or newer: run 'make PYTHON=/path/to/python3.12 ...'"; exit 2; }

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(TEST_BIN)/python: | python-check
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_BIN)/python -m pip install --quiet --upgrade pip

$(TEST_VENV)/.installed-test: $(TEST_BIN)/python pyproject.toml contrib/halton-meter-provider-example/pyproject.toml
	$(TEST_BIN)/python -m pip install --quiet -e '.[test,docs]' -e contrib/halton-meter-provider-example
	@touch $@

# The benchmark needs trustme (its fake provider's CA) from the test extra, but not the contrib plugin.
$(VENV)/.installed-bench: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

install-test: $(TEST_VENV)/.installed-test

install-bench: $(VENV)/.installed-bench

install-app: python-check
	$(PYTHON) -m venv $(APP_DIR)
	$(APP_DIR)/bin/python -m pip install --quiet --upgrade pip $(APP_PIP_ARGS)
	$(APP_DIR)/bin/python -m pip install --quiet --upgrade --force-reinstall --no-deps .
	$(APP_DIR)/bin/python -m pip install --quiet $(APP_PIP_ARGS) .
	@mkdir -p $(BIN_DIR)
	@ln -sf $(APP_DIR)/bin/halton-meter $(BIN_DIR)/halton-meter
	@echo "installed: $(BIN_DIR)/halton-meter -> $(APP_DIR)/bin/halton-meter"
	@case ":$$PATH:" in *":$(BIN_DIR):"*) ;; *) \
	  echo "note: $(BIN_DIR) is not on your PATH, so new shells will not find halton-meter; add it with:"; \
	  echo "  echo 'export PATH=\"$(BIN_DIR):\$$PATH\"' >> ~/.profile   (then open a new terminal)";; esac

init: install-app
	$(APP_DIR)/bin/halton-meter init --non-interactive $(INIT_ARGS)

uninstall:
	-$(APP_DIR)/bin/halton-meter uninstall $(UNINSTALL_ARGS)
	rm -f $(BIN_DIR)/halton-meter
	rm -rf $(APP_DIR)

serve: install
	$(BIN)/halton-meter serve

# `make test`: types, then the suite in two parts: everything but the time-bound tests on TEST_WORKERS
# workers, then the time-bound (`serial`) ones alone. With PYTEST_ARGS, one plain run of what they select.
TEST_WORKERS ?= 2
test: install-test
	$(TEST_BIN)/python -m mypy
ifeq ($(strip $(PYTEST_ARGS)),)
	$(TEST_BIN)/python -m pytest -n $(TEST_WORKERS) -m "not serial"
	$(TEST_BIN)/python -m pytest -m serial
else
	$(TEST_BIN)/python -m pytest $(PYTEST_ARGS)
endif

# `make test-wheel`: build the sdist and the wheel, install the wheel with pip on Python 3.12 and 3.13 and
# with pipx and `uv tool`, and use each install from a throwaway HOME (CI runs it after `make test`).
test-wheel:
	bash .ci/wheel-smoke

bench: install-bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TEST_VENV)

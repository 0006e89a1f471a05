# Everything a fresh clone needs: `make demo` and `make test` install what is missing first.
#   .venv/         Python virtual environment (pip, pinned by constraints.txt)
#   node_modules/  the Solidity compiler (solc-js), OpenZeppelin Contracts and Anvil (npm ci)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: install ape-solc contracts check-contracts test test-fast demo lint clean

install: $(PIP_STAMP) $(NPM_STAMP) ape-solc

## Let ape (py-solc-x) find the npm compiler as solc 0.8.28.
ape-solc: $(PIP_STAMP) $(NPM_STAMP)
	$(PY) tools/ape_solc.py

$(PIP_STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,ape]'
	touch $@

# `npm install` from the lock file rather than `npm ci`: the registry here serves only the
# linux-amd64 Anvil binary, so the lock lacks the other platforms' optional packages and `npm ci`
# refuses it as out of sync. `--no-save` keeps package-lock.json as committed.
$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

## Compile contracts/ into market/chain/artifacts/ (commit the result).
contracts: $(NPM_STAMP)
	node tools/build-contracts.mjs

## Fail when the committed artifacts differ from a fresh build.
check-contracts: $(NPM_STAMP)
	node tools/build-contracts.mjs --check

## The whole suite: embedded chain, Anvil, ape, property tests.
test: install check-contracts
	$(PY) tools/run_pytest.py -n 2 --durations=15 $(PYTEST_ARGS)

## Everything but the Anvil and slow tests (`@pytest.mark.slow` and the suites tests/conftest.py's
## SLOW_SUITES names), on both cores: under 3 minutes.
test-fast: install
	$(PY) tools/run_pytest.py -n 2 -m "not anvil and not slow" $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/market demo

lint: install
	$(VENV)/bin/ruff check market compute nodes tests scripts tools

clean:
	rm -rf $(VENV) node_modules .pytest_cache .hypothesis .build

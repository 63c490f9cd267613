# One command to run the demo, one to run the tests; both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"

demo: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[standard]"
	$(BIN)/python -m haske backends
	$(BIN)/python examples/demo.py --host $(HOST) --port $(PORT)

test: dev
	$(BIN)/python -m haske backends
	$(BIN)/pytest

bench: dev
	$(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf build dist *.egg-info rust/target haske/_speedups/*.c haske/_speedups/*.so haske/*.so

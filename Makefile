# One command to run the demo, one to run the tests; both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test dev bench autobahn clean

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

# The Autobahn|Testsuite runs on Python 2.7 only; it is installed into $(AUTOBAHN) alone.
PYTHON2 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/2.7*/bin/python2.7) python2.7)
AUTOBAHN ?= .autobahn
AUTOBAHN_SITE = $(AUTOBAHN)/lib/python2.7/site-packages

$(AUTOBAHN)/wstest:
	$(PYTHON2) -m pip install --quiet --ignore-installed --prefix $(AUTOBAHN) "setuptools==44.0.0" "wheel<0.38"
	PYTHONPATH=$(AUTOBAHN_SITE) $(PYTHON2) -m pip install --quiet --ignore-installed \
	  --prefix $(AUTOBAHN) "autobahntestsuite==25.10.1"
	printf '#!/bin/sh\nPYTHONPATH="%s" exec "%s" "%s" "$$@"\n' "$(abspath $(AUTOBAHN_SITE))" \
	  "$(PYTHON2)" "$(abspath $(AUTOBAHN))/bin/wstest" > $@
	chmod +x $@

autobahn: dev $(AUTOBAHN)/wstest
	$(BIN)/python -m tests.conformance.autobahn --wstest $(AUTOBAHN)/wstest

clean:
	rm -rf build dist *.egg-info $(AUTOBAHN) rust/target haske/_speedups/*.c haske/_speedups/*.so haske/*.so

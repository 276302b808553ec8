# The two commands of the README: `make demo` and `make test`. Each sets up everything it
# needs on a fresh machine with Python >= 3.11, a JDK >= 11 and Maven: a virtualenv with
# the project and its dependencies, and Apache Kafka's jars (fetched by Maven, cached).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-fast install clean

$(BIN)/ottscore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/ottscore

demo: install
	$(BIN)/ottscore demo

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

clean:
	-$(BIN)/ottscore broker stop
	rm -rf .ottscore

# The two commands of the README: `make demo` and `make test`. Each sets up everything it
# needs on a fresh machine with Python >= 3.11 (and its headers), a C compiler, a JDK >= 11
# and Maven: a virtualenv with the project and its dependencies (pip compiles the Cython
# kernels), and Apache Kafka's jars (fetched by Maven, cached).
# `make test` also installs Debian's `prometheus` package when `promtool` is missing: the
# tests check the Prometheus rules with promtool and scrape a worker with the real server.
# The package's service is not started where no init system runs (containers, CI).
# The tests also build deploy/compose-check with Go (>= 1.24) to validate docker-compose.yml
# with Compose's own loader; its modules come from the Go module proxy on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-fast lint install tools clean

# the Cython kernels are compiled by pip install: changing one installs again
$(BIN)/ottscore: pyproject.toml $(wildcard pipeline/*/*.pyx)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/ottscore

tools:
	command -v promtool >/dev/null || ( \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus)
	@command -v go >/dev/null || { echo "make test needs Go >= 1.24: it validates \
	  docker-compose.yml with Compose's own loader (deploy/compose-check)"; exit 1; }

demo: install
	$(BIN)/ottscore demo

# ruff (pyproject.toml [tool.ruff]) over the repository, mypy over pipeline/
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install tools lint
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install tools lint
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

clean:
	-$(BIN)/ottscore broker stop
	rm -rf .ottscore

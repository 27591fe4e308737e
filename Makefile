# The two commands of the README:
#   make book   -> builds the course into _build/html (sets up .venv on first use)
#   make test   -> runs every test: ruff, unit tests, nbval on every notebook,
#                  the nbgrader round trip and the browser test on the built book
# Everything else here is a helper of those two, or an instructor/benchmark tool.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(abspath $(VENV))/bin
# nbgrader calls `alembic` by name: the venv's bin must be on PATH (TOOLING.md).
export PATH := $(BIN):$(PATH)
export PYTHONHASHSEED := 0
export MPLBACKEND := Agg
JOBS ?= 2

.PHONY: book test lint unit env clean grade bench
.DEFAULT_GOAL := book

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

env: $(VENV)/.installed

book: env
	rm -rf _build/html _build/jupyter_execute _build/.doctrees
	$(BIN)/jupyter-book build . -W --keep-going

lint: env
	$(BIN)/ruff check .

unit: env
	$(BIN)/python -m pytest tests -n $(JOBS) -q

test: env book
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg

clean:
	rm -rf _build .pytest_cache .ruff_cache

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
JOBS ?= 2

.PHONY: book test lint unit env warm clean grade bench exercises
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

# Build the cached supervised warm starts once, before pytest-xdist workers and notebooks
# need them (deterministic; cached in $$COURSE_LIB_CACHE or ~/.cache/course_lib).
warm: env
	$(BIN)/python -c "from course_lib.tasks import AdditionTask as T, MultiStepSumTask as M; \
	from course_lib.sft import warm_start; from course_lib.trl_bridge import warm_start_hf; \
	warm_start(T(seed=0)); warm_start_hf(T(seed=0)); warm_start(M(seed=0))"

test: env book warm
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile --nbval \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg

# Instructor: grade a whole class (collect, sandboxed parallel autograde, feedback, export).
ASSIGNMENT ?=
WORKERS ?= 0
grade: env
	@test -n "$(ASSIGNMENT)" || { echo "usage: make grade ASSIGNMENT=<id> [WORKERS=N]"; exit 2; }
	$(BIN)/python -m course_lib.grading $(ASSIGNMENT) --workers $(WORKERS)

# Regenerate the student versions in exercises/ from solutions/ (commit the result).
exercises: env
	for d in solutions/*/; do $(BIN)/nbgrader generate_assignment $$(basename $$d) --force; done

clean:
	rm -rf _build .pytest_cache .ruff_cache

"""solutions/<id>/checks.toml (what the trusted grader runs) and the instructor notebook's
test cells (what students run) agree: the same grade_ids, points and success text, the
same checks with the same inputs, visible or hidden alike, and the same verdict, cell by
cell, on the solution and on wrong answers (fast: both run the same comparisons here,
in-process; the grader's transport is covered by test_grading_adversarial.py)."""

import ast

import nbformat
import pytest
import torch
from nbgrader_flow import REPO, solution_source
from test_grading_adversarial import WRONG

import course_lib.grading.checks as gc
from course_lib.grading.harness import CHECKS, checks_in_cell, evaluate_inputs, load_declarations
from course_lib.grading.restore import is_instructor_cell

ASSIGNMENTS = ["ps1_advantages", "ps2_clipping", "ps3_bandit"]


def _test_cells(a):
    nb = nbformat.read(REPO / "solutions" / a / f"{a}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: c for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade") and is_instructor_cell(c)}


def _norm(check):
    return (check.check, check.function, [ast.unparse(ast.parse(x)) for x in check.args],
            check.kwargs, check.hidden)


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_declarations_restate_the_test_cells(a):
    decl = load_declarations(REPO / "solutions" / a / "checks.toml")
    cells = _test_cells(a)
    assert [t.grade_id for t in decl.tests] == list(cells)
    for test in decl.tests:
        cell = cells[test.grade_id]
        assert test.points == cell.metadata["nbgrader"]["points"], test.grade_id
        checks, other = checks_in_cell(cell.source)
        assert not other, f"{test.grade_id}: statements the declarations cannot express"
        assert [_norm(c) for c in test.checks] == [_norm(c) for c in checks], test.grade_id
        assert f"print({test.ok!r})" in cell.source.replace('"', "'"), test.grade_id


def _functions(a, wrong):
    ns = {"torch": torch}
    for src in _sources(a, wrong).values():
        exec(src, ns)
    return ns


def _sources(a, wrong):
    nb = nbformat.read(REPO / "solutions" / a / f"{a}.ipynb", as_version=4)
    names = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
             if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"
             and not c.metadata["nbgrader"].get("grade")]
    out = {n: solution_source(a, n) for n in names}
    for name, old, new in (WRONG[a] if wrong else []):
        out[name] = out[name].replace(old, new)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("a", ASSIGNMENTS)
@pytest.mark.parametrize("wrong", [False, True], ids=["solution", "wrong"])
def test_notebook_cells_and_declarations_give_the_same_verdicts(a, wrong):
    ns = _functions(a, wrong)
    decl = load_declarations(REPO / "solutions" / a / "checks.toml")
    cells = _test_cells(a)
    verdicts = {}
    for test in decl.tests:
        try:  # the notebook's way: run the test cell (hidden tests included)
            exec(cells[test.grade_id].source, dict(ns))
            in_notebook = True
        except AssertionError:
            in_notebook = False
        declared = True
        for check in test.checks:  # the grader's way: the declared checks, same comparisons
            core, _ = CHECKS[check.check]
            try:
                core(gc.LocalCaller({check.function: ns[check.function]}),
                     *evaluate_inputs(check), fn=check.function, **check.kwargs)
            except gc.CheckFailed:
                declared = False
                break
        verdicts[test.grade_id] = (in_notebook, declared)
    assert all(x == y for x, y in verdicts.values()), verdicts
    if not wrong:
        assert all(x for x, _ in verdicts.values()), verdicts
    else:
        assert not all(x for x, _ in verdicts.values()), verdicts

"""The assignments as nbgrader sees them: structure, Validator both ways, no drift.

* every solutions/<id>/<id>.ipynb passes nbgrader's Validator (the Python API: the
  `nbgrader validate` command exits 0 even when validation fails);
* every committed student version exercises/<id>/<id>.ipynb fails every graded cell
  (`validate --invert` semantics): unmodified, it earns 0 points;
* the committed student versions are exactly what `nbgrader generate_assignment` makes
  from the sources now (drift test).
The simulated classes going through the whole flow are in tests/test_roundtrip_ps*.py.
"""

import json
import re

import nbformat
import pytest
from nbgrader_flow import REPO, make_course, nbgrader

ASSIGNMENTS = {
    "ps1_advantages": ["group_advantages", "prob_degenerate_group", "simulate_degenerate_share"],
    "ps2_clipping": ["clipped_surrogate_loss", "group_diversity"],
    "ps3_bandit": ["train_bandit_grpo"],
}


def _nb(kind, a):
    return nbformat.read(REPO / kind / a / f"{a}.ipynb", as_version=4)


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_structure(a):
    """Each student function has its own solution cell whose grade_id is its name; test
    cells are locked, have points and visible + hidden parts; grade_ids are unique."""
    nb = _nb("solutions", a)
    meta = [c.metadata.get("nbgrader", {}) for c in nb.cells]
    ids = [m["grade_id"] for m in meta if m]
    assert len(ids) == len(set(ids)), f"duplicated grade_id in {a}"
    by_id = {m["grade_id"]: (c, m) for c, m in zip(nb.cells, meta, strict=True) if m}
    for fn in ASSIGNMENTS[a]:
        cell, m = by_id[fn]
        assert m["solution"] and not m["grade"] and not m["locked"]
        assert re.search(rf"^def {fn}\(", cell.source, re.M), f"{fn} not defined in its cell"
        assert "### BEGIN SOLUTION" in cell.source
    tests = [(c, m) for c, m in zip(nb.cells, meta, strict=True)
             if m.get("grade") and not m.get("solution")]
    assert tests and all(m["locked"] and m["points"] > 0 for _, m in tests)
    assert sum("BEGIN HIDDEN TESTS" in c.source for c, _ in tests) >= len(tests) - 1
    manual = [m for m in meta if m.get("grade") and m.get("solution")]
    assert manual, f"{a} has no manually graded answer"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "course_lib.grading.checks" in first_code.source  # checks load before student code
    assert by_id["setup"][1]["locked"]


@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_student_version_has_no_solutions_or_hidden_tests(a):
    assert (REPO / "solutions" / a / "checks.toml").exists()
    assert sorted(p.name for p in (REPO / "exercises" / a).iterdir()) == [f"{a}.ipynb"], \
        "only the notebook is released (checks.toml holds the hidden inputs)"
    text = (REPO / "exercises" / a / f"{a}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    nb = _nb("exercises", a)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def _validate(path, invert):
    from nbgrader.validator import Validator
    from traitlets.config import Config

    c = Config()
    c.Execute.timeout = 120
    v = Validator(config=c)
    v.invert = invert
    return v.validate(str(path))


@pytest.mark.slow
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_solution_passes_validator(a):
    result = _validate(REPO / "solutions" / a / f"{a}.ipynb", invert=False)
    assert result == {}, json.dumps(result, indent=1)[:3000]


@pytest.mark.slow
@pytest.mark.parametrize("a", ASSIGNMENTS)
def test_unmodified_student_version_fails_every_test(a):
    result = _validate(REPO / "exercises" / a / f"{a}.ipynb", invert=True)
    assert result == {}, f"tests that pass without any student code: {result.get('passed')}"


@pytest.mark.slow
def test_exercises_do_not_drift(tmp_path):
    """exercises/ is exactly what generate_assignment makes from solutions/ now."""
    course, _, env = make_course(tmp_path, list(ASSIGNMENTS))
    for a in ASSIGNMENTS:
        nbgrader(["generate_assignment", a, "--force"], course, env)
        fresh = json.loads((course / "exercises" / a / f"{a}.ipynb").read_text())
        committed = json.loads((REPO / "exercises" / a / f"{a}.ipynb").read_text())
        assert fresh == committed, (
            f"exercises/{a} is stale: run `nbgrader generate_assignment {a} --force` at the "
            f"repository root and commit the result"
        )

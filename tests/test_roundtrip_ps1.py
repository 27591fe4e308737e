"""A simulated class goes through the real nbgrader flow for ps1_advantages.

generate -> release (local exchange) -> fetch -> submit -> `make grade` (collect, trusted
grading, feedback, export) -> nbgrader export, with the submissions a real class produces.
One module-scoped run (grading costs seconds per submission); the tests below read its
results.
"""

import math

import pytest
from nbgrader_flow import delete_cell, hidden_lines, run_class, set_source, solution_source

pytestmark = pytest.mark.slow  # autograde: seconds per submission

A = "ps1_advantages"
# autograded points per test cell (the written answer is graded by hand: 2 more points)
VALUES, BATCHED, DEGENERATE, PROB, SIM = 2, 2, 1, 2, 2
FULL = VALUES + BATCHED + DEGENERATE + PROB + SIM

POP_STD = '''
def group_advantages(rewards, eps=1e-6):
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True, unbiased=False)  # population std: wrong
    adv = (rewards - mean) / (std + eps)
    equal = (rewards == rewards[..., :1]).all(dim=-1, keepdim=True)
    return torch.where(equal, torch.zeros_like(adv), adv)
'''


def submissions(nb):
    """The class: student id -> the notebook they submit (edited from the released one)."""
    def variant(**changes):
        out = nb.copy()
        out.cells = [c.copy() for c in nb.cells]
        for grade_id, src in changes.items():
            if src is None:
                delete_cell(out, grade_id)
            else:
                set_source(out, grade_id, src)
        return out

    correct = {g: solution_source(A, g) for g in
               ("group_advantages", "prob_degenerate_group", "simulate_degenerate_share")}
    return {
        # submitted with the real `nbgrader submit --student` command (first one)
        "correct": variant(**correct,
                           binary_vs_continuous="Binary rewards are exact but sparse ..."),
        "unmodified": variant(),
        # population std, no simulation: only the degenerate-group and probability tests
        "partial": variant(group_advantages=POP_STD,
                           prob_degenerate_group=correct["prob_degenerate_group"]),
        "wrong": variant(
            group_advantages="def group_advantages(rewards, eps=1e-6):\n"
                             "    return rewards - rewards.mean()\n",
            prob_degenerate_group="def prob_degenerate_group(p, G):\n    return p ** G\n",
            simulate_degenerate_share="def simulate_degenerate_share(source, G, n_groups=20000):"
                                      "\n    return 0.5 ** G * 2\n"),
        "delegating": variant(
            **{**correct,
               "group_advantages": "from course_lib import compute_group_advantages as cga\n"
                                   "def group_advantages(rewards, eps=1e-6):\n"
                                   "    return cga(rewards, eps)\n"}),
        # wrong code, and the test cell edited so that it would pass: autograde restores it
        "edits_test": variant(**{**correct, "group_advantages": POP_STD,
                                 "test_group_advantages_values": "print('all good')"}),
        # correct code, one test cell deleted: nbgrader cannot grade that cell
        "deletes_test": variant(**correct, test_prob_degenerate_group=None),
        "raising": variant(**{**correct, "group_advantages":
                              "def group_advantages(rewards, eps=1e-6):\n"
                              "    raise RuntimeError('not today')\n"}),
        "syntax_error": variant(**{**correct, "group_advantages":
                                   "def group_advantages(rewards, eps=1e-6)\n"
                                   "    return rewards\n"}),
        # wrong code, and the usual checking functions replaced by ones that always pass
        "patches_checks": variant(**{**correct, "group_advantages": POP_STD + '''
import math
import numpy.testing
import torch.testing
torch.allclose = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
numpy.testing.assert_allclose = lambda *a, **k: None
math.isclose = lambda *a, **k: True
'''}),
    }


EXPECTED = {
    "correct": FULL,
    "unmodified": 0,
    "partial": DEGENERATE + PROB,
    "wrong": 0,
    "delegating": PROB + SIM,
    "edits_test": DEGENERATE + PROB + SIM,
    "deletes_test": FULL,  # the grader restores deleted test cells
    "raising": PROB + SIM,
    "syntax_error": PROB + SIM,
    "patches_checks": DEGENERATE + PROB + SIM,
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return run_class(tmp_path_factory.mktemp("ps1_class"), A, submissions)


def test_scores(graded):
    print(f"\n{A}: max {graded.max_score}, autograde {graded.autograde_seconds:.1f} s for "
          f"{len(EXPECTED)} submissions; timings {graded.timings}")
    for student, score in graded.scores.items():
        print(f"  {student:<15} {score}  {graded.cell_scores.get(student)}")
    assert graded.max_score == FULL + 2  # + the hand-graded written answer
    got = {s: graded.scores[s] for s in EXPECTED}
    assert got == pytest.approx(EXPECTED), graded.autograde_log[-3000:]


def test_feedback_exists_without_hidden_tests(graded):
    secrets = hidden_lines(A)
    assert len(secrets) >= 5
    for student in EXPECTED:
        text = graded.feedback[student]
        assert text, f"no feedback for {student}"
        leaked = [ln for ln in secrets if ln in text]
        assert not leaked, f"feedback of {student} shows hidden tests: {leaked[:3]}"
    # failing hidden tests still explain what is wrong, without their code
    assert "population std" in graded.feedback["partial"]
    assert "not run by the grader" in graded.feedback["delegating"]


def test_export_has_one_row_per_student(graded):
    ids = [r["student_id"] for r in graded.csv_rows]
    assert sorted(ids) == sorted(EXPECTED)
    for r in graded.csv_rows:
        assert math.isclose(float(r["raw_score"]), EXPECTED[r["student_id"]])

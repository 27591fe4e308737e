"""ps3_bandit through the real nbgrader flow with a small class (see test_roundtrip_ps1)."""

import pytest
from nbgrader_flow import hidden_lines, run_class, set_source, solution_source

pytestmark = pytest.mark.slow  # autograde: seconds per submission

A = "ps3_bandit"
OUTPUT, UPDATE, EASY, TEN, GROUPS = 1, 2, 2, 2, 1
FULL = OUTPUT + UPDATE + EASY + TEN + GROUPS


def submissions(nb):
    def variant(**changes):
        out = nb.copy()
        out.cells = [c.copy() for c in nb.cells]
        for grade_id, src in changes.items():
            set_source(out, grade_id, src)
        return out

    correct = solution_source(A, "train_bandit_grpo")
    return {
        "correct": variant(train_bandit_grpo=correct),
        "unmodified": variant(),
        # draws from torch's global generator: learns, but ignores the seed
        "unseeded": variant(train_bandit_grpo=correct.replace("generator=g)", "generator=None)")),
        # maximises the loss: a probability vector, seeded, but it finds the WORST arm
        "wrong_sign": variant(train_bandit_grpo=correct.replace("loss.backward()",
                                                                "(-loss).backward()")),
        "delegating": variant(train_bandit_grpo=(
            "from course_lib.bandit import train_bandit_grpo as _reference\n"
            "def train_bandit_grpo(env, group_size=8, steps=300, lr=0.1, clip_eps=0.2,"
            " seed=0):\n"
            "    return _reference(env, group_size, steps, lr, clip_eps, seed)\n")),
    }


EXPECTED = {
    "correct": FULL,
    "unmodified": 0,
    "unseeded": UPDATE + EASY + TEN + GROUPS,
    "wrong_sign": OUTPUT,
    "delegating": 0,
}

#: An unseeded trainer draws differently at every grading (each sandbox starts from fresh
#: random state, as a new process does), so whether it finds the best arm within its 100
#: steps is luck: these checks give it all their points or none. Everything else is exact.
LUCK = {"unseeded": {"test_bandit_easy": EASY, "test_bandit_ten_arms": TEN}}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return run_class(tmp_path_factory.mktemp("ps3_class"), A, submissions)


def test_scores_feedback_export(graded):
    print(f"\n{A}: autograde {graded.autograde_seconds:.1f} s for {len(EXPECTED)} "
          f"submissions; {graded.timings}")
    for student, score in graded.scores.items():
        print(f"  {student:<12} {score}  {graded.cell_scores.get(student)}")
    assert graded.max_score == FULL + 2  # + the hand-graded comparison
    for student, want in EXPECTED.items():
        luck = LUCK.get(student, {})
        cells = graded.cell_scores[student]
        for cell, points in luck.items():
            assert cells[cell] in (0, points), (student, cell, cells[cell])
            if cells[cell] == 0:
                assert "does not find the best arm" in graded.feedback[student]
        lucky = sum(cells[c] for c in luck)
        assert graded.scores[student] - lucky == pytest.approx(want - sum(luck.values())), \
            (student, cells)
    secrets = hidden_lines(A)
    for student in EXPECTED:
        assert graded.feedback[student], f"no feedback for {student}"
        assert not [ln for ln in secrets if ln in graded.feedback[student]], student
    assert "not run by the grader" in graded.feedback["delegating"]
    assert sorted(r["student_id"] for r in graded.csv_rows) == sorted(EXPECTED)

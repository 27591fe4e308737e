"""ps2_clipping through the real nbgrader flow with a small class (see test_roundtrip_ps1)."""

import pytest
from nbgrader_flow import hidden_lines, run_class, set_source, solution_source

pytestmark = pytest.mark.slow  # autograde: seconds per submission

A = "ps2_clipping"
VALUES, MASK, GRAD, DIV, DIV_EDGES = 2, 2, 2, 2, 1
FULL = VALUES + MASK + GRAD + DIV + DIV_EDGES

TOKEN_MEAN = '''
def clipped_surrogate_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    mask = mask.float()
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    return (per_token * mask).sum() / mask.sum()  # DAPO's token mean, not GRPO's
'''


def submissions(nb):
    def variant(**changes):
        out = nb.copy()
        out.cells = [c.copy() for c in nb.cells]
        for grade_id, src in changes.items():
            set_source(out, grade_id, src)
        return out

    correct = {g: solution_source(A, g) for g in ("clipped_surrogate_loss", "group_diversity")}
    return {
        "correct": variant(**correct),
        "unmodified": variant(),
        # token-mean aggregation (right only when all responses have the same length: the
        # hidden gradient tests use padded batches) and a diversity that counts instead of
        # dividing by G
        "partial": variant(clipped_surrogate_loss=TOKEN_MEAN,
                           group_diversity="def group_diversity(samples):\n"
                                           "    return torch.tensor([len(set(samples.tolist()))"
                                           "], dtype=torch.float).squeeze()\n"),
        "delegating": variant(**{**correct, "clipped_surrogate_loss":
                                 "import course_lib\n"
                                 "def clipped_surrogate_loss(logprobs, old_logprobs, advantages,"
                                 " mask, clip_eps=0.2):\n"
                                 "    return course_lib.grpo_loss(logprobs, old_logprobs, "
                                 "advantages, mask, clip_eps=clip_eps, beta=0.0)[0]\n"}),
    }


EXPECTED = {
    "correct": FULL,
    "unmodified": 0,
    "partial": VALUES,
    "delegating": DIV + DIV_EDGES,
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    return run_class(tmp_path_factory.mktemp("ps2_class"), A, submissions)


def test_scores_feedback_export(graded):
    print(f"\n{A}: autograde {graded.autograde_seconds:.1f} s for {len(EXPECTED)} "
          f"submissions; {graded.timings}")
    for student, score in graded.scores.items():
        print(f"  {student:<12} {score}  {graded.cell_scores.get(student)}")
    assert graded.max_score == FULL + 4  # + the hand-graded experiment and interpretation
    assert {s: graded.scores[s] for s in EXPECTED} == pytest.approx(EXPECTED)
    secrets = hidden_lines(A)
    for student in EXPECTED:
        assert graded.feedback[student], f"no feedback for {student}"
        assert not [ln for ln in secrets if ln in graded.feedback[student]], student
    assert "token-mean" in graded.feedback["partial"]
    assert sorted(r["student_id"] for r in graded.csv_rows) == sorted(EXPECTED)

"""Tests of baseline_advantages (REINFORCE's group baselines: RLOO, the group mean, none).

Values worked out by hand, agreement with the loop implementation of ``reference_impls.py``
on random inputs, and ValueError on bad input.
"""

import pytest
import torch
from reference_impls import compare_baseline_advantages

from course_lib import baseline_advantages, compute_group_advantages


def test_hand_computed_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    # rloo: 1 - (0 + 0 + 1) / 3 = 2/3 and 0 - (1 + 0 + 1) / 3 = -2/3
    torch.testing.assert_close(baseline_advantages(r, "rloo"),
                               torch.tensor([2, -2, -2, 2], dtype=torch.float64) / 3)
    torch.testing.assert_close(baseline_advantages(r, "mean"),  # mean 0.5
                               torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(baseline_advantages(r, "none"), r)
    # G = 2: the other one's reward is the baseline
    torch.testing.assert_close(baseline_advantages(torch.tensor([[3.0, 1.0]]), "rloo"),
                               torch.tensor([[2.0, -2.0]]))


def test_matches_the_loop_reference():
    problems = compare_baseline_advantages(baseline_advantages)
    assert problems == [], "\n".join(problems[:20])


def test_rloo_is_the_group_mean_scaled_and_equal_groups_get_zero():
    r = torch.rand(5, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(baseline_advantages(r, "rloo"),
                               compute_group_advantages(r, scale="none") * 8 / 7)
    equal = torch.full((2, 7), 0.1)  # 0.1 * 7 / 7 is not exactly 0.1 in float32
    assert (baseline_advantages(equal, "rloo") == 0).all()
    assert (baseline_advantages(equal, "mean") == 0).all()


def test_bad_input_raises_a_clear_error():
    with pytest.raises(ValueError, match="at least 2"):
        baseline_advantages(torch.tensor([[1.0], [0.0]]), "rloo")
    with pytest.raises(ValueError, match="at least 2"):
        baseline_advantages(torch.tensor([1.0]), "mean")
    assert baseline_advantages(torch.tensor([[1.0], [0.0]]), "none").shape == (2, 1)
    with pytest.raises(ValueError, match="NaN"):
        baseline_advantages(torch.tensor([1.0, float("nan")]), "none")
    with pytest.raises(ValueError, match="NaN"):
        baseline_advantages(torch.tensor([1.0, float("nan")]), "rloo")
    with pytest.raises(ValueError, match="baseline"):
        baseline_advantages(torch.tensor([1.0, 0.0]), "loo")
    with pytest.raises(ValueError, match="floating-point"):
        baseline_advantages(torch.tensor([1, 0]), "rloo")
    with pytest.raises(ValueError, match="scalar"):
        baseline_advantages(torch.tensor(1.0), "none")

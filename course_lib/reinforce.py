"""REINFORCE with a baseline from the group: leave-one-out (RLOO), the group mean, or none.

Explained in the comparison chapter (``book/06_comparison.ipynb``); the trainer that uses
it is :mod:`course_lib.trainers.reinforce`. REINFORCE: Williams 1992. The leave-one-out
baseline: Kool et al. 2019 ("Buy 4 REINFORCE samples, get a baseline for free!"), for
language models Ahmadian et al. 2024 ("Back to Basics", arXiv:2402.14740).
"""

from __future__ import annotations

from torch import Tensor

from course_lib._checks import check_choice, check_finite, check_float
from course_lib.grpo import compute_group_advantages

__all__ = ["baseline_advantages", "BASELINES"]

BASELINES = ("rloo", "mean", "none")


def baseline_advantages(rewards: Tensor, baseline: str = "rloo") -> Tensor:
    """Advantages of REINFORCE with a baseline computed inside each group of completions.

    Chapter: ``book/06_comparison.ipynb``. Each completion i of a group of G completions of
    one prompt gets one advantage A_i; the policy gradient is then
    ``1/G sum_i A_i grad log pi(o_i)``, every token of o_i with the same A_i:

    - ``"rloo"``: ``A_i = r_i - 1/(G-1) sum_{j != i} r_j``, the leave-one-out baseline
      (Kool et al. 2019; Ahmadian et al. 2024). It does not depend on o_i, so the gradient
      estimate stays unbiased. Computed as ``G/(G-1) (r_i - mean(r))``, the same number.
    - ``"mean"``: ``A_i = r_i - mean(r)``, the mean of the whole group, r_i included:
      ``(G-1)/G`` times RLOO's (GRPO's numerator; Dr. GRPO's advantage, Liu et al. 2025).
    - ``"none"``: ``A_i = r_i``, REINFORCE without a baseline (Williams 1992).

    With a baseline, a group whose rewards are all equal gets advantages exactly 0.

    Args:
        rewards: float tensor (..., G), groups along the last dim; G >= 2 with a baseline.
        baseline: ``"rloo"``, ``"mean"`` or ``"none"``.

    Returns:
        Advantages (..., G), the shape and dtype of ``rewards``.

    Raises:
        ValueError: non-float or non-tensor rewards, NaN/inf, a group of size < 2 with a
            baseline, an unknown ``baseline``.
    """
    check_float("rewards", rewards)
    check_choice("baseline", baseline, BASELINES)
    if rewards.dim() == 0:
        raise ValueError("rewards must have groups along the last dim, got a scalar")
    if baseline == "none":
        return check_finite("rewards", rewards).clone()
    # [core:baseline_advantages]
    centred = compute_group_advantages(rewards, scale="none")  # (..., G) r_i - mean(r)
    if baseline == "mean":
        return centred
    G = rewards.shape[-1]
    return centred * G / (G - 1)  # (..., G) = r_i - mean of the other G - 1
    # [/core:baseline_advantages]

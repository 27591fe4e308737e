"""Per-token estimators of KL(pi_theta || pi_ref) from log-probs of sampled tokens.

Explained in the book's GRPO chapter (``book/05_grpo.ipynb``). Tokens are sampled from
pi_theta, so each estimator is a function of the log-ratio at the sampled token only
(Schulman 2020, "Approximating KL divergence").
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib._checks import check_choice, check_finite, check_float, check_same_shape
from course_lib.surrogate import LOG_RATIO_CLAMP

__all__ = ["kl_estimate", "KL_KINDS"]

KL_KINDS = ("k1", "k2", "k3")


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) at tokens sampled from pi_theta.

    Chapter: ``book/05_grpo.ipynb``.

    With ``log r = ref_logprobs - logprobs`` (the log of pi_ref / pi_theta):

    - ``"k1"``: ``logprobs - ref_logprobs`` = -log r. Unbiased, but can be negative and
      has high variance. This is the penalty InstructGPT folds into the reward
      (Ouyang et al. 2022, Eq. 2).
    - ``"k2"``: ``0.5 * (log r)^2``. Always >= 0, biased, low variance.
    - ``"k3"``: ``r - log r - 1``. Unbiased and always >= 0 (Schulman 2020); GRPO's KL
      term (Shao et al. 2024, DeepSeekMath Eq. 4).

    The log-ratio is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] = [-20, 20] before
    ``exp`` so that k3 cannot overflow (k3 <= e^20 ~ 4.9e8); k3 is computed as
    ``expm1(log r) - log r`` so it stays >= 0 in floating point.

    Args:
        logprobs: (...,) log pi_theta of the sampled tokens, typically (B, T).
        ref_logprobs: same shape, log pi_ref of the same tokens.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        Tensor of the same shape, one estimate per token (no masking, no averaging).
    """
    check_float("logprobs", logprobs)
    check_float("ref_logprobs", ref_logprobs)
    check_same_shape("logprobs", logprobs, "ref_logprobs", ref_logprobs)
    check_finite("logprobs", logprobs)
    check_finite("ref_logprobs", ref_logprobs)
    check_choice("KL estimator kind", kind, KL_KINDS)
    # [core:kl_estimate]
    log_r = (ref_logprobs - logprobs).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # (...,)
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    # expm1(x) - x == exp(x) - 1 - x without the cancellation that makes exp(x) - x - 1
    # round below 0 for tiny |x| in float32; k3 >= 0 holds exactly, the clamp keeps it so.
    return (torch.expm1(log_r) - log_r).clamp(min=0.0)
    # [/core:kl_estimate]

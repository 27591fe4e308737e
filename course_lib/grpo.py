"""GRPO: group-relative advantages and the GRPO loss (Shao et al. 2024, DeepSeekMath).

Explained in the book's GRPO chapter (``book/05_grpo.ipynb``); the loss types are the
variants that chapter compares: GRPO as in the paper, DAPO's token-level mean
(Yu et al. 2025) and Dr. GRPO's constant normaliser (Liu et al. 2025).
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib._checks import (
    check_choice,
    check_clip_eps,
    check_finite,
    check_float,
    check_mask,
    check_nonnegative,
    check_same_shape,
)
from course_lib.kl import kl_estimate
from course_lib.surrogate import aggregate, clipped_surrogate, masked_mean

__all__ = ["compute_group_advantages", "grpo_loss", "SCALES", "GRPO_LOSS_TYPES"]

SCALES = ("group", "none", "batch")
#: loss_type -> aggregation mode of :func:`course_lib.surrogate.aggregate`
GRPO_LOSS_TYPES = {
    "grpo": "seq-mean-token-mean",
    "dapo": "token-mean",
    "bnpo": "token-mean",
    "dr_grpo": "token-sum-norm",
}


def compute_group_advantages(rewards: Tensor, eps: float = 1e-6, scale: str = "group") -> Tensor:
    """Group-relative advantages: outcome supervision of GRPO (Shao et al. 2024, §4.1.2).

    Chapter: ``book/05_grpo.ipynb``.

    Each response i of a group of G responses to the same prompt gets one advantage,
    which every token of that response shares:

    - ``"group"``: ``A_i = (r_i - mean(r)) / (std(r) + eps)``, mean and std over the
      group. **std is the unbiased (Bessel, n - 1) one**, as in TRL and verl; the
      population std would be smaller by sqrt((G-1)/G) (~0.935 at G = 8).
    - ``"none"``: ``A_i = r_i - mean(r)`` (Dr. GRPO, Liu et al. 2025: no std division,
      which up-weights too-easy and too-hard prompts).
    - ``"batch"``: the group mean is subtracted, then divided by the unbiased std of all
      rewards in the tensor + eps (TRL's ``scale_rewards="batch"``).

    A group whose rewards are all equal gets advantages exactly 0: it carries no policy
    gradient signal.

    Args:
        rewards: float tensor of shape (G,) or (..., G); groups along the last dim.
        eps: added to the std; TRL uses 1e-4, verl 1e-6.
        scale: ``"group"``, ``"none"`` or ``"batch"``.

    Returns:
        Advantages with the same shape and dtype as ``rewards``.

    Raises:
        ValueError: non-float or non-tensor rewards, NaN/inf, a group of size < 2,
            an unknown ``scale``, a negative ``eps``.
    """
    check_float("rewards", rewards)
    if rewards.dim() == 0 or rewards.shape[-1] < 2:
        g = "a scalar" if rewards.dim() == 0 else f"size {rewards.shape[-1]}"
        raise ValueError(
            f"rewards must have groups of at least 2 along the last dim, got {g} "
            f"(shape {tuple(rewards.shape)}); one response has nothing to be compared with"
        )
    check_finite("rewards", rewards)
    check_choice("scale", scale, SCALES)
    check_nonnegative("eps", eps)
    # [core:compute_group_advantages]
    centered = rewards - rewards.mean(dim=-1, keepdim=True)  # (..., G)
    if scale == "group":
        adv = centered / (rewards.std(dim=-1, keepdim=True) + eps)  # unbiased std
    elif scale == "batch":
        adv = centered / (rewards.std() + eps)
    else:
        adv = centered
    all_equal = (rewards == rewards[..., :1]).all(dim=-1, keepdim=True)  # (..., 1)
    return torch.where(all_equal, torch.zeros_like(adv), adv)
    # [/core:compute_group_advantages]


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    ref_logprobs: Tensor | None = None,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    beta: float = 0.04,
    loss_type: str = "grpo",
    max_len: int | None = None,
    kl_ratio_weight: bool = False,
) -> tuple[Tensor, dict[str, float]]:
    """The GRPO loss to minimise: minus the objective of DeepSeekMath Eq. 3.

    Chapter: ``book/05_grpo.ipynb``.

    Per token t of response i, with ``rho = exp(logprobs - old_logprobs)``:

        l_{i,t} = -min(rho * A_i, clip(rho, 1 - clip_eps, 1 + clip_eps_high) * A_i)
                  + beta * k3_{i,t}

    where k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1 (DeepSeekMath Eq. 4; added only
    when ``ref_logprobs`` is given and beta > 0). The KL is in the loss, not the reward.
    With ``kl_ratio_weight`` the KL term is ``beta * rho_{i,t} * k3_{i,t}`` (rho with its
    gradient), DeepSeek-V3.2's unbiased KL (DeepSeek-AI 2025; TRL's
    ``use_bias_correction_kl``): the tokens come from pi_old, and
    ``E_{pi_old}[rho k3] = E_{pi_theta}[k3] = KL(pi_theta || pi_ref)``, so the gradient is
    that of this reverse KL; the plain k3 term's expected gradient is that of
    KL(pi_ref || pi_theta) instead, even at rho = 1.
    The per-token losses are then averaged according to ``loss_type``:

    - ``"grpo"``: mean over each response's own real tokens (1/|o_i|), then mean over
      responses (Eq. 3). Responses with no real token are left out.
    - ``"dapo"`` (alias ``"bnpo"``): sum over all real tokens / number of real tokens
      (DAPO's token-level loss, Yu et al. 2025).
    - ``"dr_grpo"``: sum over all real tokens / (B * max_len), ``max_len`` defaulting to T
      (Dr. GRPO, Liu et al. 2025).

    ``clip_eps_high`` defaults to ``clip_eps``; DAPO's clip-higher uses 0.28.

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (with gradient).
        old_logprobs: (B, T) log pi_old of the same tokens (no gradient).
        advantages: (B,) one per response (broadcast over its tokens) or (B, T).
        mask: (B, T) 1 on real completion tokens, 0 on padding; default all ones.
        ref_logprobs: (B, T) log pi_ref, or None for no KL term.
        clip_eps, clip_eps_high: clip range, each in (0, 1).
        beta: KL coefficient >= 0 (DeepSeekMath 0.04, R1-Zero 0.001, TRL default 0).
        loss_type: ``"grpo"``, ``"dapo"``, ``"bnpo"`` or ``"dr_grpo"``.
        max_len: the constant of ``"dr_grpo"`` (the generation budget), default T.
        kl_ratio_weight: weight the k3 term by the ratio rho (see above).

    Returns:
        ``(loss, stats)``: a scalar tensor and a dict of floats: ``clip_frac`` (share of
        real tokens where the clipped term is used), ``kl`` (mean k3 over real tokens, 0
        without ``ref_logprobs``), ``ratio_mean`` (mean rho over real tokens).
    """
    check_float("logprobs", logprobs)
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must have shape (B, T), got {tuple(logprobs.shape)}")
    check_float("old_logprobs", old_logprobs)
    check_same_shape("logprobs", logprobs, "old_logprobs", old_logprobs)
    check_float("advantages", advantages)
    B, T = logprobs.shape
    if advantages.shape == (B,):
        advantages = advantages[:, None].expand(B, T)  # (B, T)
    elif advantages.shape != (B, T):
        raise ValueError(
            f"advantages must have shape (B,) = ({B},) or (B, T) = ({B}, {T}), "
            f"got {tuple(advantages.shape)}"
        )
    for name, x in (("logprobs", logprobs), ("old_logprobs", old_logprobs),
                    ("advantages", advantages)):
        check_finite(name, x)
    m = check_mask(mask, logprobs)  # (B, T)
    check_clip_eps("clip_eps", clip_eps)
    if clip_eps_high is not None:
        check_clip_eps("clip_eps_high", clip_eps_high)
    check_nonnegative("beta", beta)
    check_choice("loss_type", loss_type, tuple(GRPO_LOSS_TYPES))
    if m.sum() == 0:
        raise ValueError("mask is empty: the batch has no real completion token")

    # [core:grpo_loss]
    per_token, ratio, is_clipped = clipped_surrogate(
        logprobs, old_logprobs, advantages.detach(), clip_eps, clip_eps_high
    )  # each (B, T)
    kl_mean = 0.0
    if ref_logprobs is not None:
        check_float("ref_logprobs", ref_logprobs)
        check_same_shape("logprobs", logprobs, "ref_logprobs", ref_logprobs)
        k3 = kl_estimate(logprobs, ref_logprobs.detach(), kind="k3")  # (B, T)
        if beta > 0:
            per_token = per_token + beta * (ratio * k3 if kl_ratio_weight else k3)
        kl_mean = float(masked_mean(k3.detach(), m))
    loss = aggregate(per_token, m, GRPO_LOSS_TYPES[loss_type], max_len)
    stats = {
        "clip_frac": float(masked_mean(is_clipped.to(m.dtype), m)),
        "kl": kl_mean,
        "ratio_mean": float(masked_mean(ratio.detach(), m)),
    }
    return loss, stats
    # [/core:grpo_loss]

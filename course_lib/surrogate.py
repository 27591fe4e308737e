"""The clipped surrogate shared by PPO and GRPO, and the ways to average it over tokens.

Explained in the book's PPO chapter (``book/03_ppo.ipynb``) and GRPO chapter
(``book/05_grpo.ipynb``). PPO and GRPO differ in where the advantage comes from (a critic
and GAE, or the group's rewards); the per-token clipped term below is the same for both.
How the per-token losses are then averaged is where GRPO, DAPO and Dr. GRPO differ.
"""

from __future__ import annotations

import torch
from torch import Tensor

from course_lib._checks import check_choice

__all__ = ["LOG_RATIO_CLAMP", "clipped_surrogate", "aggregate", "masked_mean", "AGGREGATIONS"]

#: Log-ratios are clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before ``exp`` so that a
#: policy that moved far from the sampling policy cannot overflow: exp(20) ~ 4.9e8, far
#: outside any clip range, so the clamp never changes a loss value that matters and its
#: gradient there is 0 anyway (the clipped term is active).
LOG_RATIO_CLAMP = 20.0

#: Aggregation modes of per-token losses (B, T) -> scalar; see :func:`aggregate`.
AGGREGATIONS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "token-sum-norm")


def clipped_surrogate(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token clipped surrogate loss of PPO (Schulman et al. 2017, Eq. 7), negated.

    Chapter: ``book/03_ppo.ipynb``.

    ``loss_t = -min(rho_t * A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) * A_t)`` with
    ``rho_t = exp(logprobs - old_logprobs)`` (log-ratio clamped to +-LOG_RATIO_CLAMP).
    ``eps_high`` defaults to ``eps_low`` (symmetric clip); DAPO's clip-higher uses
    eps_low = 0.2, eps_high = 0.28 (Yu et al. 2025).

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (carries the gradient).
        old_logprobs: (B, T) log pi_old of the same tokens (treated as constants).
        advantages: (B, T), already broadcast to tokens.
        clip_eps, clip_eps_high: the clip range; validated by the callers.

    Returns:
        ``(loss, ratio, clipped)``, each (B, T): the per-token loss to minimise, the
        ratio rho_t, and a bool tensor that is True where the clipped term is the one
        ``min`` uses and differs from the unclipped one (ratio > 1 + eps_high with A > 0,
        or ratio < 1 - eps_low with A < 0). There the gradient is exactly 0.
    """
    # [core:clipped_surrogate]
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = (logprobs - old_logprobs.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = ratio * advantages  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high) * advantages  # (B, T)
    loss = -torch.minimum(unclipped, clipped)  # (B, T)
    is_clipped = ((ratio > 1.0 + eps_high) & (advantages > 0)) | (
        (ratio < 1.0 - clip_eps) & (advantages < 0)
    )
    return loss, ratio, is_clipped
    # [/core:clipped_surrogate]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1 (any shape; 0 if mask is empty)."""
    # [core:masked_mean]
    return (x * mask).sum() / mask.sum().clamp(min=1.0)
    # [/core:masked_mean]


def aggregate(
    per_token: Tensor, mask: Tensor, mode: str, max_len: int | None = None
) -> Tensor:
    """Average per-token losses (B, T) into one scalar; the modes GRPO variants differ by.

    Chapter: ``book/05_grpo.ipynb``.

    - ``"seq-mean-token-mean"``: mean over each sequence's real tokens (1/|o_i|), then mean
      over the sequences that have at least one real token. GRPO as written in
      DeepSeekMath (Shao et al. 2024, Eq. 3); the source of the length bias that
      Dr. GRPO (Liu et al. 2025) removes.
    - ``"token-mean"``: sum over all real tokens / number of real tokens in the batch.
      DAPO's token-level loss (Yu et al. 2025); TRL's "dapo"/"bnpo"; PPO's usual mean.
    - ``"seq-mean-token-sum"``: sum over each sequence's tokens, mean over sequences.
    - ``"token-sum-norm"``: sum over all real tokens / (B * max_len), a constant
      normaliser (Dr. GRPO; ``max_len`` defaults to T, the generation budget).

    Args:
        per_token: (B, T) losses.
        mask: (B, T) float 0/1, 1 on real tokens; must contain at least one 1.
        mode: one of :data:`AGGREGATIONS`.
        max_len: only for ``"token-sum-norm"``, a positive int.

    Returns:
        A scalar tensor.
    """
    check_choice("aggregation", mode, AGGREGATIONS)
    if mask.sum() == 0:
        raise ValueError("mask is empty: no real token to average the loss over")
    # [core:aggregate]
    masked = per_token * mask  # (B, T)
    if mode == "token-mean":
        return masked.sum() / mask.sum()
    if mode == "token-sum-norm":
        n = per_token.shape[-1] if max_len is None else max_len
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        return masked.sum() / (per_token.shape[0] * n)
    lengths = mask.sum(-1)  # (B,)
    has_tokens = lengths > 0  # (B,) sequences with no real token are left out
    seq = masked.sum(-1)  # (B,)
    if mode == "seq-mean-token-mean":
        seq = seq / lengths.clamp(min=1.0)
    return seq[has_tokens].mean()
    # [/core:aggregate]

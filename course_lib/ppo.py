"""PPO for RLHF: the clipped policy loss, GAE, whitening and the clipped value loss.

Explained in the book's PPO chapter (``book/03_ppo.ipynb``). The policy term is the same
clipped surrogate GRPO uses (:mod:`course_lib.surrogate`); PPO's advantages come from a
learned critic through GAE instead of from a group of rewards.
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
    check_same_shape,
)
from course_lib.surrogate import aggregate, clipped_surrogate, masked_mean

__all__ = ["ppo_policy_loss", "kl_shaped_rewards", "gae", "whiten", "value_loss",
           "PPO_AGGREGATIONS"]

PPO_AGGREGATIONS = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def _check_tokens(name: str, x: Tensor) -> Tensor:
    check_float(name, x)
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(x.shape)}")
    return check_finite(name, x)


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor | None = None,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    agg: str = "token-mean",
) -> tuple[Tensor, dict[str, float]]:
    """PPO's clipped policy loss (Schulman et al. 2017, Eq. 7), negated to minimise.

    Chapter: ``book/03_ppo.ipynb``.

    Per token: ``-min(rho_t * A_t, clip(rho_t, 1 - clip_eps, 1 + clip_eps_high) * A_t)``
    with ``rho_t = exp(logprobs - old_logprobs)``; ``clip_eps_high`` defaults to
    ``clip_eps``. Averaged over real tokens by ``agg``: ``"token-mean"`` (all tokens of
    the batch), ``"seq-mean-token-mean"`` (per sequence, then over sequences) or
    ``"seq-mean-token-sum"`` (sum per sequence, mean over sequences).

    Args:
        logprobs: (B, T) log pi_theta of the sampled tokens (with gradient).
        old_logprobs: (B, T) log pi_old (no gradient).
        advantages: (B, T) per-token advantages (e.g. from :func:`gae`, whitened).
        mask: (B, T) 1 on real tokens; default all ones.

    Returns:
        ``(loss, stats)``; stats: ``clip_frac`` (share of real tokens where the clipped
        term is used), ``ratio_mean``, ``approx_kl`` (mean of k3 between pi_old and
        pi_theta, ``(rho - 1) - log rho``, a diagnostic of how far the update moved).
    """
    _check_tokens("logprobs", logprobs)
    _check_tokens("old_logprobs", old_logprobs)
    _check_tokens("advantages", advantages)
    check_same_shape("logprobs", logprobs, "old_logprobs", old_logprobs)
    check_same_shape("logprobs", logprobs, "advantages", advantages)
    m = check_mask(mask, logprobs)
    check_clip_eps("clip_eps", clip_eps)
    if clip_eps_high is not None:
        check_clip_eps("clip_eps_high", clip_eps_high)
    check_choice("agg", agg, PPO_AGGREGATIONS)
    if m.sum() == 0:
        raise ValueError("mask is empty: the batch has no real token")
    # [core:ppo_policy_loss]
    per_token, ratio, is_clipped = clipped_surrogate(
        logprobs, old_logprobs, advantages.detach(), clip_eps, clip_eps_high
    )  # each (B, T)
    loss = aggregate(per_token, m, agg)
    log_ratio = torch.log(ratio.detach())
    stats = {
        "clip_frac": float(masked_mean(is_clipped.to(m.dtype), m)),
        "ratio_mean": float(masked_mean(ratio.detach(), m)),
        "approx_kl": float(masked_mean(ratio.detach() - 1.0 - log_ratio, m)),
    }
    return loss, stats
    # [/core:ppo_policy_loss]


def kl_shaped_rewards(scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards of RLHF PPO: the KL penalty on every token, the score at the end.

    Chapter: ``book/03_ppo.ipynb``. InstructGPT (Ouyang et al. 2022, Eq. 2) maximises
    ``R(x, y) = r(x, y) - beta log(pi(y|x) / pi_ref(y|x))``; as in OpenAI's
    lm-human-preferences, the log-ratio is spread over the tokens (its per-token k1
    estimate) and the score of the whole completion is the reward of its last real token:
    ``R_t = -kl_coef * kl_t + [t = last] * score``.

    Args:
        scores: (B,) one score per completion (here the verifier's reward).
        kl: (B, T) per-token KL estimate, e.g. k1 ``log pi_old - log pi_ref`` (0 without
            a reference).
        mask: (B, T) 1 on real tokens; every row needs at least one.
        kl_coef: beta >= 0 (InstructGPT: 0.02).

    Returns:
        (B, T) per-token rewards, for :func:`gae`.
    """
    _check_tokens("kl", kl)
    m = check_mask(mask, kl, like_name="kl")
    check_finite("scores", check_float("scores", scores))
    if scores.shape != kl.shape[:1]:
        raise ValueError(f"scores must have shape ({kl.shape[0]},), got {tuple(scores.shape)}")
    if (m.sum(-1) == 0).any():
        raise ValueError("a completion has no real token (an all-zero row of mask): its "
                         "score has no token to go to")
    if not isinstance(kl_coef, (int, float)) or not kl_coef >= 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef!r}")
    # [core:kl_shaped_rewards]
    rewards = -kl_coef * kl  # (B, T) the penalty on every token
    last = m.sum(-1).long() - 1  # (B,) the last real token
    rewards[torch.arange(len(last)), last] += scores  # the score at the end
    return rewards
    # [/core:kl_shaped_rewards]


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16), per token.

    Chapter: ``book/03_ppo.ipynb``.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` and ``A_t = sum_l (gamma*lam)^l delta_{t+l}``,
    computed backwards as ``A_t = delta_t + gamma * lam * A_{t+1}``. The recursion runs over
    real tokens only (masked positions are skipped, and get advantage 0); the bootstrap
    value after the last real token is 0 (the response is finished). OpenAI's
    lm-human-preferences and InstructGPT use gamma = 1, lam = 0.95.

    Args:
        rewards: (B, T) per-token rewards (in RLHF: -beta * KL per token, plus the
            reward model's score on the last real token).
        values: (B, T) the critic's V(s_t).
        mask: (B, T) 1 on real tokens; default all ones.
        gamma, lam: discount and GAE parameter, each in [0, 1].

    Returns:
        ``(advantages, returns)``, each (B, T), with ``returns = advantages + values``
        (the critic's regression target). Raw: whiten advantages yourself (:func:`whiten`).
    """
    _check_tokens("rewards", rewards)
    _check_tokens("values", values)
    check_same_shape("rewards", rewards, "values", values)
    m = check_mask(mask, rewards, like_name="rewards")
    for name, x in (("gamma", gamma), ("lam", lam)):
        if not isinstance(x, (int, float)) or not 0.0 <= x <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {x!r}")
    # [core:gae]
    B, T = rewards.shape
    values = values.detach()
    advantages = torch.zeros_like(rewards)  # (B, T)
    next_value = torch.zeros(B, dtype=rewards.dtype)  # (B,) V of the next real token
    carry = torch.zeros(B, dtype=rewards.dtype)  # (B,) A of the next real token
    for t in reversed(range(T)):
        real = m[:, t] > 0  # (B,)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        a_t = delta + gamma * lam * carry  # (B,)
        advantages[:, t] = torch.where(real, a_t, torch.zeros_like(a_t))
        carry = torch.where(real, a_t, carry)
        next_value = torch.where(real, values[:, t], next_value)
    return advantages, advantages + values
    # [/core:gae]


def whiten(x: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """Normalise ``x`` to masked mean 0 and unbiased (n - 1) masked variance 1.

    Chapter: ``book/03_ppo.ipynb``.

    ``(x - mean) / sqrt(var + eps)`` with mean and variance over the real entries only;
    masked entries are set to 0. No paper equation: an implementation detail of OpenAI's
    lm-human-preferences code (Ziegler et al. 2019), which whitens PPO advantages per batch.

    Args:
        x: float tensor of any shape, typically (B, T).
        mask: same shape, 1 on real entries; default all ones. Needs >= 2 real entries.
    """
    check_float("x", x)
    check_finite("x", x)
    m = check_mask(mask, x, like_name="x")
    n = m.sum()
    if n < 2:
        raise ValueError(f"whiten needs at least 2 real entries, got {int(n)}")
    # [core:whiten]
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / (n - 1)
    return (x - mean) * torch.rsqrt(var + eps) * m
    # [/core:whiten]


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor | None = None,
    clip_range: float = 0.2,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss of PPO (OpenAI baselines ppo2; Schulman et al. 2017, Eq. 9 term).

    Chapter: ``book/03_ppo.ipynb``.

    ``0.5 * token-mean(max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2))``: the critic
    may not move its prediction more than ``c`` from the value it had when the batch was
    collected.

    Args:
        values: (B, T) the critic's current predictions (with gradient).
        old_values: (B, T) its predictions at sampling time.
        returns: (B, T) targets (``returns`` of :func:`gae`).
        mask: (B, T) 1 on real tokens; default all ones.
        clip_range: c > 0, in the units of the value.

    Returns:
        ``(loss, stats)``; stats: ``clip_frac`` (share of real tokens where the clipped
        term is the larger one, i.e. the one used), ``value_mean``.
    """
    for name, x in (("values", values), ("old_values", old_values), ("returns", returns)):
        _check_tokens(name, x)
    check_same_shape("values", values, "old_values", old_values)
    check_same_shape("values", values, "returns", returns)
    m = check_mask(mask, values, like_name="values")
    if not isinstance(clip_range, (int, float)) or not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range!r}")
    if m.sum() == 0:
        raise ValueError("mask is empty: no real token to fit the value on")
    # [core:value_loss]
    old_values = old_values.detach()
    returns = returns.detach()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    loss_unclipped = (values - returns) ** 2  # (B, T)
    loss_clipped = (v_clipped - returns) ** 2  # (B, T)
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), m)
    stats = {
        "clip_frac": float(masked_mean((loss_clipped > loss_unclipped).to(m.dtype), m)),
        "value_mean": float(masked_mean(values.detach(), m)),
    }
    return loss, stats
    # [/core:value_loss]

"""DPO and its variants: losses on preference pairs (Rafailov et al. 2023).

Explained in the book's DPO chapter (``book/04_dpo.ipynb``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from course_lib._checks import check_choice, check_finite, check_float, check_same_shape

__all__ = ["dpo_loss", "DPO_LOSS_TYPES"]

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """The DPO loss (Rafailov et al. 2023, Eq. 7) and its IPO, hinge and robust variants.

    Chapter: ``book/04_dpo.ipynb``.

    With the margin of log-ratios
    ``h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)]``:

    - ``"sigmoid"``: ``-log sigmoid(beta * h)`` (DPO). With ``label_smoothing = e > 0`` it is
      conservative DPO (cDPO, Mitchell 2023):
      ``-(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h)``, for labels flipped with
      probability e.
    - ``"ipo"``: ``(h - 1/(2 beta))^2`` (Azar et al. 2023). IPO is defined on
      length-averaged log-probs (sum / number of tokens): pass those if you want the
      paper's IPO; this function uses whatever log-probs it is given.
    - ``"hinge"``: ``relu(1 - beta * h)`` (SLiC, Zhao et al. 2023).
    - ``"robust"``: rDPO (Chowdhury et al. 2024), an unbiased loss under label noise e:
      ``[-(1 - e) log sigmoid(beta h) + e log sigmoid(-beta h)] / (1 - 2e)``.

    The implicit reward of a response is ``beta * log pi(y|x)/pi_ref(y|x)`` (Eq. 5 up to a
    term that depends on x only). The paper uses beta = 0.1.

    Args:
        policy_chosen_logps, policy_rejected_logps: (N,) sequence log-probs (summed over
            the response's tokens) under the policy, with gradient.
        ref_chosen_logps, ref_rejected_logps: (N,) the same under the frozen reference.
        beta: > 0.
        loss_type: ``"sigmoid"``, ``"ipo"``, ``"hinge"`` or ``"robust"``.
        label_smoothing: e in [0, 0.5] for "sigmoid", [0, 0.5) for "robust", 0 otherwise.

    Returns:
        ``(loss, stats)``: the mean over pairs, and floats ``chosen_rewards``,
        ``rejected_rewards`` (mean implicit rewards), ``reward_accuracy`` (share of pairs
        where the chosen reward is higher) and ``reward_margin`` (mean difference).
    """
    names = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps",
             "ref_rejected_logps")
    tensors = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
               ref_rejected_logps)
    for name, x in zip(names, tensors, strict=True):
        check_float(name, x)
        if x.dim() != 1 or x.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N,) with N >= 1, got {tuple(x.shape)}")
        check_same_shape(names[0], tensors[0], name, x)
        check_finite(name, x)
    if not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    check_choice("loss_type", loss_type, DPO_LOSS_TYPES)
    e = label_smoothing
    if loss_type == "sigmoid" and not 0.0 <= e <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5] for sigmoid, got {e!r}")
    if loss_type == "robust" and not 0.0 <= e < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5) for robust, got {e!r}")
    if loss_type in ("ipo", "hinge") and e != 0.0:
        raise ValueError(f"label_smoothing is not defined for {loss_type}; got {e!r}")

    # [core:dpo_loss]
    chosen_logratio = policy_chosen_logps - ref_chosen_logps.detach()  # (N,)
    rejected_logratio = policy_rejected_logps - ref_rejected_logps.detach()  # (N,)
    h = chosen_logratio - rejected_logratio  # (N,)
    if loss_type == "sigmoid":
        losses = -(1 - e) * F.logsigmoid(beta * h) - e * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1 - 2 * e)
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = F.relu(1.0 - beta * h)
    chosen_rewards = beta * chosen_logratio.detach()  # (N,)
    rejected_rewards = beta * rejected_logratio.detach()  # (N,)
    stats = {
        "chosen_rewards": float(chosen_rewards.mean()),
        "rejected_rewards": float(rejected_rewards.mean()),
        "reward_accuracy": float((chosen_rewards > rejected_rewards).float().mean()),
        "reward_margin": float((chosen_rewards - rejected_rewards).mean()),
    }
    return losses.mean(), stats
    # [/core:dpo_loss]

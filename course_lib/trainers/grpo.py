"""GRPO trainer: group-relative advantages, the clipped surrogate, no critic.

Chapter: "GRPO" (and "Comparing PPO, GRPO, REINFORCE and DPO"). Shao et al. 2024
(DeepSeekMath), Algorithm 1 with outcome supervision and one policy iteration.

1. rollout: ``prompts_per_step`` training prompts, ``group_size`` completions each
   (``Trainer.group_rollout``; with ``dynamic_sampling``, DAPO's: only groups that differ);
2. score: the task's verifier (a rule, so no reward model is held);
3. targets: one advantage per completion, from the rewards of its group of G
   (``compute_group_advantages``; ``scale`` "group": std, "none": Dr. GRPO, or "batch");
4.-5. ``mu`` passes of ``minibatches`` optimiser steps on ``grpo_loss``: the clipped
   surrogate + ``beta`` * k3 KL;
6. log: the keys of :data:`course_lib.trainers.metrics.METRICS`.

Models held: the policy, and the reference (a frozen copy of the starting policy) only if
``beta > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from course_lib._checks import NonNegative
from course_lib.grpo import GRPO_LOSS_TYPES, SCALES, compute_group_advantages, grpo_loss
from course_lib.trainers.base import Batch, ClipConfig, GroupConfig, Trainer
from course_lib.trainers.metrics import surrogate_metrics

__all__ = ["GRPOConfig", "GRPOTrainer"]


@dataclass
class GRPOConfig(GroupConfig, ClipConfig):
    """GRPO settings: 16 prompts x 8 completions per step, no KL term (TRL's defaults)."""

    beta: NonNegative = 0.0
    """Coefficient of the k3 KL to the reference in the loss (DeepSeekMath 0.04; 0: none)."""
    kl_ratio_weight: bool = False
    """Weight the k3 KL by the ratio pi/pi_old: DeepSeek-V3.2's unbiased KL gradient."""
    loss_type: Literal[tuple(GRPO_LOSS_TYPES)] = "grpo"
    """Token aggregation (see course_lib.grpo_loss)."""
    scale: Literal[SCALES] = "group"
    """Advantage scaling: group std, none (Dr. GRPO) or batch std."""
    adv_eps: NonNegative = 1e-6
    """Added to the std of the advantage."""


class GRPOTrainer(Trainer):
    """The pieces of the module docstring, on :class:`~course_lib.trainers.base.Trainer`."""

    config_cls = GRPOConfig

    def holds_reference(self) -> bool:
        return self.config.beta > 0

    def rollout(self) -> Batch:
        return self.group_rollout()

    def compute_targets(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        grouped = batch.rewards.view(-1, cfg.group_size)  # (B/G, G)
        adv = compute_group_advantages(grouped, eps=cfg.adv_eps, scale=cfg.scale)
        batch.advantages = adv.reshape(-1)  # (B,) one per completion
        return {"adv_std": float(batch.advantages.std())}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logprobs = self.policy_logprobs(batch)  # (B, N)
        loss, stats = grpo_loss(
            logprobs, batch.old_logprobs, batch.advantages, mask=batch.mask,
            clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, loss_type=cfg.loss_type,
            max_len=self.max_new_tokens, ref_logprobs=batch.ref_logprobs, beta=cfg.beta,
            kl_ratio_weight=cfg.kl_ratio_weight)
        return loss, surrogate_metrics(loss, stats, logprobs, batch)

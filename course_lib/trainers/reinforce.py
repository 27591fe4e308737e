"""REINFORCE trainer: a leave-one-out (RLOO) or group-mean baseline, no clip, no critic.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". Williams 1992 (REINFORCE); RLOO:
Kool et al. 2019, for LLMs Ahmadian et al. 2024 ("Back to Basics").

1. rollout: ``prompts_per_step`` training prompts, ``group_size`` completions each
   (``Trainer.group_rollout``; with ``dynamic_sampling``, DAPO's: only groups that differ);
2. score: the task's verifier (a rule, so no reward model is held);
3. targets: one advantage per completion, from the rewards of its group of G (minus
   ``kl_coef`` * its summed k1 KL), minus the ``baseline`` (``baseline_advantages``; RLOO:
   ``r_i - mean_{j!=i} r_j``);
4.-5. one optimiser step on ``-mean_i A_i sum_t log pi``: ``ppo_policy_loss`` at ratio 1;
6. log: the keys of :data:`course_lib.trainers.metrics.METRICS`.

Models held: the policy, and the reference (a frozen copy of the starting policy) only if
``kl_coef > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from course_lib._checks import NonNegative
from course_lib.ppo import ppo_policy_loss
from course_lib.reinforce import BASELINES, baseline_advantages
from course_lib.trainers.base import Batch, GroupConfig, Trainer

__all__ = ["ReinforceConfig", "ReinforceTrainer"]


@dataclass
class ReinforceConfig(GroupConfig):
    """REINFORCE settings: 16 prompts x 8 completions per step (GRPO's budget), no KL."""

    kl_coef: NonNegative = 0.0
    """Coefficient of the summed k1 KL in the reward (0: no reference)."""
    baseline: Literal[BASELINES] = "rloo"
    """Subtracted from the reward: rloo (mean of the other G - 1), mean (of all G) or none."""

    def group_baseline(self) -> bool:
        return self.baseline != "none"


class ReinforceTrainer(Trainer):
    """The pieces of the module docstring, on :class:`~course_lib.trainers.base.Trainer`."""

    config_cls = ReinforceConfig

    def holds_reference(self) -> bool:
        return self.config.kl_coef > 0

    def rollout(self) -> Batch:
        return self.group_rollout()

    def compute_targets(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        kl = self.reference_kl(batch).sum(-1)  # (B,) k1 summed over each completion
        grouped = (batch.rewards - cfg.kl_coef * kl).view(-1, cfg.group_size)  # (B/G, G)
        adv = baseline_advantages(grouped, cfg.baseline)  # (B/G, G) rloo: r_i - mean of others
        batch.advantages = adv.reshape(-1)  # (B,) one per completion
        return {"adv_std": float(batch.advantages.std())}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = self.policy_logprobs(batch)  # (B, N)
        advantages = batch.advantages[:, None].expand_as(logprobs)  # (B, N) A on every token
        loss, _ = ppo_policy_loss(
            logprobs, logprobs.detach(), advantages, mask=batch.mask,
            agg="seq-mean-token-sum")  # old = logprobs: ratio 1, the clip never acts
        return loss, {"loss": float(loss.detach())}

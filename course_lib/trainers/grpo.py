"""GRPO trainer: group-relative advantages and the clipped GRPO loss, no critic.

Chapter: "GRPO" (and "Comparing PPO, GRPO, REINFORCE and DPO"). Shao et al. 2024
(DeepSeekMath), Algorithm 1 with outcome supervision and one policy iteration.

1. rollout: ``prompts_per_step`` training prompts, ``group_size`` completions each (in
   passes over the shuffled training set, or with ``prompt_sampling="prioritized"``
   weighted towards the prompts the policy still fails: Kimi k1.5's prioritized sampling);
2. score: the task's verifier (a rule, so no reward model is held);
3. targets: one advantage per completion, from the rewards of its group of G
   (``compute_group_advantages``; ``scale`` "group": std, "none": Dr. GRPO, or "batch");
4.-5. ``mu`` optimiser steps on ``grpo_loss``: clipped surrogate + ``beta`` * k3 KL;
6. log: the keys of :data:`course_lib.trainers.metrics.METRICS`.

Models held: the policy, and the reference (a frozen copy of the starting policy) only if
``beta > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from course_lib._checks import NonNegative, UnitInterval, at_least
from course_lib.grpo import GRPO_LOSS_TYPES, SCALES, compute_group_advantages, grpo_loss
from course_lib.trainers.base import Batch, ClipConfig, Trainer
from course_lib.trainers.metrics import group_metrics, surrogate_metrics

__all__ = ["GRPOConfig", "GRPOTrainer", "PROMPT_SAMPLING"]

#: How GRPOTrainer picks each step's training prompts (see :meth:`GRPOTrainer.rollout`).
PROMPT_SAMPLING = ("uniform", "prioritized")


@dataclass
class GRPOConfig(ClipConfig):
    """GRPO settings: 16 prompts x 8 completions per step, no KL term (TRL's defaults)."""

    group_size: Annotated[int, at_least(2, "one completion has no group")] = 8
    """G, completions per prompt (DeepSeekMath 64, R1 16, TRL 8)."""
    beta: NonNegative = 0.0
    """Coefficient of the k3 KL to the reference (DeepSeekMath 0.04; 0: no reference)."""
    kl_ratio_weight: bool = False
    """Weight the k3 KL by the ratio pi/pi_old: DeepSeek-V3.2's unbiased KL gradient."""
    loss_type: Literal[tuple(GRPO_LOSS_TYPES)] = "grpo"
    """Token aggregation (see course_lib.grpo_loss)."""
    scale: Literal[SCALES] = "group"
    """Advantage scaling: group std, none (Dr. GRPO) or batch std."""
    adv_eps: NonNegative = 1e-6
    """Added to the std of the advantage."""
    prompt_sampling: Literal[PROMPT_SAMPLING] = "uniform"
    """uniform: passes over the shuffled training set; prioritized: Kimi k1.5's prioritized
    sampling, probability of prompt i proportional to max(1 - s_i, priority_floor), s_i the
    share correct in its last group (never sampled: s_i = 0). Logs train_unsolved."""
    priority_floor: UnitInterval = 0.2
    """Smallest sampling weight of a prompt (prioritized sampling): solved prompts stay in
    the mix, at this weight against 1 for a prompt with no correct completion."""
    lr: float = 5e-4


class GRPOTrainer(Trainer):
    """The pieces of the module docstring, on :class:`~course_lib.trainers.base.Trainer`."""

    config_cls = GRPOConfig

    def __init__(self, policy, task, config: GRPOConfig | None = None):
        super().__init__(policy, task, config)
        #: (T,) s_i of prioritized sampling: share correct in prompt i's last group (NaN:
        #: not sampled yet)
        self.success = torch.full((len(task.train),), float("nan"))
        self.prompt_index = {p: i for i, p in enumerate(task.train)}
        self.prompt_generator = torch.Generator().manual_seed(self.config.seed)
        if self.config.prompt_sampling == "prioritized" and \
                self.config.prompts_per_step > len(task.train):
            raise ValueError(f"prioritized sampling draws {self.config.prompts_per_step} "
                             f"distinct prompts per step but the task has only "
                             f"{len(task.train)} training prompts")

    def holds_reference(self) -> bool:
        return self.config.beta > 0

    def updates_per_step(self) -> int:
        return self.config.mu

    def rollout(self) -> Batch:
        return self.sample_groups(self.config.prompts_per_step, self.config.group_size)

    def next_prompts(self, n: int) -> list[str]:
        """``n`` distinct training prompts. "uniform": the base class's passes over the
        shuffled set. "prioritized": Kimi Team 2025 (Kimi k1.5, arXiv:2501.12599, Sec. 2.3.4,
        prioritized sampling), drawn without replacement with weights
        ``max(1 - s_i, priority_floor)`` (:meth:`prompt_weights`): a prompt whose group
        was all wrong gives no gradient now (its advantages are 0) but is tried again soon."""
        if self.config.prompt_sampling == "uniform":
            return super().next_prompts(n)
        weights = self.prompt_weights()  # (T,) one per training prompt
        idx = torch.multinomial(weights, n, replacement=False, generator=self.prompt_generator)
        return [self.task.train[i] for i in idx.tolist()]

    def prompt_weights(self) -> torch.Tensor:
        """(T,) the prioritized-sampling weight of each training prompt, in task order."""
        s = self.success.nan_to_num(0.0)  # never sampled: s_i = 0, weight 1
        return (1.0 - s).clamp(min=self.config.priority_floor)

    def compute_targets(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        batch.ref_logprobs = self.reference_logprobs(batch)  # (B, N), None without beta
        grouped = batch.rewards.view(-1, cfg.group_size)  # (B/G, G)
        adv = compute_group_advantages(grouped, eps=cfg.adv_eps, scale=cfg.scale)
        batch.advantages = adv.reshape(-1)  # (B,)
        metrics = {"adv_std": float(batch.advantages.std())}
        if cfg.prompt_sampling == "prioritized":
            rows = [self.prompt_index[p] for p in batch.prompts[::cfg.group_size]]
            self.success[rows] = batch.correct.view(-1, cfg.group_size).float().mean(-1)
            seen = self.success[~self.success.isnan()]
            metrics["train_unsolved"] = float((seen == 0).float().mean())
        return {**group_metrics(batch.rewards, batch.correct, cfg.group_size), **metrics}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logprobs = self.policy_logprobs(batch)  # (B, N)
        loss, stats = grpo_loss(
            logprobs, batch.old_logprobs, batch.advantages, mask=batch.mask,
            clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, loss_type=cfg.loss_type,
            max_len=self.max_new_tokens, ref_logprobs=batch.ref_logprobs, beta=cfg.beta,
            kl_ratio_weight=cfg.kl_ratio_weight)
        metrics = surrogate_metrics(loss, stats, logprobs, batch.old_logprobs, batch.mask)
        if batch.ref_logprobs is not None:
            metrics["kl_ref"] = stats["kl"]
        return loss, metrics

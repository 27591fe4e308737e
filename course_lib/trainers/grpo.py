"""GRPO trainer: group sampling, group-relative advantages, the clipped GRPO loss.

Chapter: "GRPO" (and "Comparing PPO, GRPO, REINFORCE and DPO"). Algorithm 1 of
DeepSeekMath (Shao et al. 2024) with outcome supervision, one policy iteration
(the reference is the warm start throughout):

1. rollout: ``prompts_per_step`` training prompts, ``group_size`` completions each, sampled
   from pi_old = the current policy (their sampling log-probs are ``old_logprobs``);
2. score: the task's verifier, reward 1 for the exact answer;
3. targets: ``compute_group_advantages`` per group (``scale``: "group" = (r - mean)/std,
   "none" = Dr. GRPO, "batch");
4.-5. ``mu`` optimiser steps on ``grpo_loss`` (clip ``clip_eps``/``clip_eps_high``,
   ``beta`` * k3 KL to the frozen reference, aggregation ``loss_type``: "grpo", "dapo",
   "dr_grpo");
6. log reward, loss, KL, clip fraction, share of degenerate groups (all rewards equal,
   advantage 0: no policy gradient), response length.

The reference model (a frozen copy of the starting policy) is built only when ``beta > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_lib.grpo import compute_group_advantages, grpo_loss
from course_lib.model import completion_logprobs
from course_lib.trainers.base import Batch, Trainer, TrainerConfig, frozen_copy

__all__ = ["GRPOConfig", "GRPOTrainer"]


@dataclass
class GRPOConfig(TrainerConfig):
    """GRPO settings. Defaults: 16 prompts x 8 completions per step, lr 5e-4, beta 0 (TRL's
    default; no reference model). On the running example lr 1e-3 and above collapsed the
    warm model to a constant answer within a few steps (Adam's first steps move every weight
    by about lr), 5e-4 learns steadily; see benchmarks/bench_training.py."""

    group_size: int = 8
    """G, completions per prompt (>= 2; DeepSeekMath 64, R1 16, TRL default 8)."""
    mu: int = 1
    """Optimiser steps per batch (GRPO's mu; with 1 the ratio is 1 and the clip is inactive)."""
    clip_eps: float = 0.2
    """Lower clip range epsilon of the ratio."""
    clip_eps_high: float | None = None
    """Upper clip range (None: = clip_eps; DAPO's clip-higher uses 0.28)."""
    beta: float = 0.0
    """KL coefficient to the reference (DeepSeekMath 0.04; 0 = no reference model, TRL)."""
    loss_type: str = "grpo"
    """Token aggregation: "grpo" (per-sequence mean), "dapo"/"bnpo" (token mean),
    "dr_grpo" (sum / (B * max_new_tokens))."""
    scale: str = "group"
    """Advantage scaling: "group" (divide by the group's std), "none" (Dr. GRPO), "batch"."""
    adv_eps: float = 1e-6
    """eps added to the std in the advantage."""
    lr: float = 5e-4

    def validate(self) -> None:
        super().validate()
        if self.group_size < 2:
            raise ValueError(f"group_size G must be >= 2 for group-relative advantages "
                             f"(one completion has nothing to be compared with), "
                             f"got {self.group_size}")
        if self.mu < 1:
            raise ValueError(f"mu must be >= 1, got {self.mu}")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.clip_eps_high is not None and not 0 < self.clip_eps_high < 1:
            raise ValueError(f"clip_eps_high must be in (0, 1), got {self.clip_eps_high}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.loss_type not in ("grpo", "dapo", "bnpo", "dr_grpo"):
            raise ValueError(f"loss_type must be 'grpo', 'dapo', 'bnpo' or 'dr_grpo', "
                             f"got {self.loss_type!r}")
        if self.scale not in ("group", "none", "batch"):
            raise ValueError(f"scale must be 'group', 'none' or 'batch', got {self.scale!r}")


class GRPOTrainer(Trainer):
    """GRPO on a verifiable task. See the module docstring for the six pieces.

    Example::

        policy = warm_start(AdditionTask(seed=0), seed=0)
        trainer = GRPOTrainer(policy, task, GRPOConfig(steps=200, seed=0))
        history = trainer.train()
    """

    config_cls = GRPOConfig
    name = "grpo"

    def __init__(self, policy, task, config: GRPOConfig | None = None):
        super().__init__(policy, task, config)
        if self.config.beta > 0:
            self.reference = frozen_copy(policy)

    def updates_per_step(self) -> int:
        return self.config.mu

    def rollout(self) -> Batch:
        return self.sample_groups(self.config.prompts_per_step, self.config.group_size)

    def compute_targets(self, batch: Batch) -> None:
        G = self.config.group_size
        grouped = batch.rewards.view(-1, G)  # (B/G, G)
        batch.advantages = compute_group_advantages(
            grouped, eps=self.config.adv_eps, scale=self.config.scale).reshape(-1)  # (B,)
        batch.degenerate_frac = float((grouped == grouped[:, :1]).all(-1).float().mean())
        if self.reference is not None:
            with torch.no_grad():
                batch.ref_logprobs = completion_logprobs(
                    self.reference, batch.prompt_ids, batch.tokens, batch.mask,
                    temperature=self.config.temperature, top_k=self.config.top_k)  # (B, N)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        losses, clip, kl, norms = [], [], [], []
        for _ in range(cfg.mu):
            logprobs = self.policy_logprobs(batch)  # (B, N)
            loss, stats = grpo_loss(
                logprobs, batch.old_logprobs, batch.advantages, mask=batch.mask,
                ref_logprobs=batch.get("ref_logprobs"), clip_eps=cfg.clip_eps,
                clip_eps_high=cfg.clip_eps_high, beta=cfg.beta, loss_type=cfg.loss_type,
                max_len=self.max_new_tokens)
            norms.append(self.optimizer_step(loss))
            losses.append(float(loss.detach()))
            clip.append(stats["clip_frac"])
            kl.append(stats["kl"])
        return {"loss": sum(losses) / len(losses), "kl": sum(kl) / len(kl),
                "clip_frac": sum(clip) / len(clip), "grad_norm": sum(norms) / len(norms),
                "degenerate_frac": batch.degenerate_frac,
                "adv_std": float(batch.advantages.std())}

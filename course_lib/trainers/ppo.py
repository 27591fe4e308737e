"""PPO trainer in the InstructGPT style: a critic, GAE, the KL penalty in the reward.

Chapter: "PPO for language models" (and "Comparing PPO, GRPO, REINFORCE and DPO"). Ouyang
et al. 2022 (InstructGPT, Eq. 2); GAE and whitening as in OpenAI's lm-human-preferences.

1. rollout: ``prompts_per_step`` training prompts, one completion each;
2. score: the task's verifier (a rule, so no reward model is held);
3. targets: per-token advantages by ``gae`` from the critic's values and the rewards
   (``kl_shaped_rewards``: ``-kl_coef`` * k1 KL on each token, the verifier's at the end);
4.-5. ``mu`` passes of ``minibatches`` optimiser steps on ``ppo_policy_loss`` + ``vf_coef`` *
   the critic's ``value_loss`` (separate optimisers);
6. log: the keys of :data:`course_lib.trainers.metrics.METRICS`.

Models held: the policy, and the reference (a frozen copy of the starting policy) only if
``kl_coef > 0``; the critic (its body a copy of the policy's when that is a TinyGPT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from course_lib._checks import NonNegative, Positive, UnitInterval
from course_lib.model import ModelConfig, ValueModel
from course_lib.ppo import (
    PPO_AGGREGATIONS,
    gae,
    kl_shaped_rewards,
    ppo_policy_loss,
    value_loss,
    whiten,
)
from course_lib.trainers.base import Batch, ClipConfig, Trainer, adamw
from course_lib.trainers.metrics import surrogate_metrics

__all__ = ["PPOConfig", "PPOTrainer"]


@dataclass
class PPOConfig(ClipConfig):
    """PPO settings: 128 prompts x 1 completion per step (GRPO's 16 x 8), InstructGPT's KL."""

    kl_coef: NonNegative = 0.02
    """Coefficient of the k1 KL in the reward (InstructGPT 0.02; 0: no reference)."""
    agg: Literal[PPO_AGGREGATIONS] = "token-mean"
    """Token aggregation (see course_lib.ppo_policy_loss)."""
    whiten_advantages: bool = True
    """Whiten the advantages over the batch (lm-human-preferences)."""
    gamma: UnitInterval = 1.0
    """Discount (lm-human-preferences: 1)."""
    lam: UnitInterval = 0.95
    """GAE lambda (lm-human-preferences: 0.95)."""
    vf_coef: NonNegative = 0.5
    """Weight of the value loss."""
    value_clip: Positive = 0.2
    """Clip range of the value loss (reward units)."""
    critic_lr: Positive = 1e-3
    """AdamW learning rate of the critic."""
    prompts_per_step: int = 128


class PPOTrainer(Trainer):
    """The pieces of the module docstring, on :class:`~course_lib.trainers.base.Trainer`."""

    config_cls = PPOConfig
    shuffle_every_pass = True  # lm-human-preferences: a new permutation every epoch

    def __init__(self, policy, task, config: PPOConfig | None = None,
                 critic: torch.nn.Module | None = None):
        super().__init__(policy, task, config)
        if critic is None:
            block = task.prompt_len + self.max_new_tokens
            critic = ValueModel.from_policy(
                policy, ModelConfig(block_size=max(32, block)), seed=self.config.seed)
        self.critic = critic
        self.optimizers["value_grad_norm"] = adamw(  # unfused: the PPO chapter's runs
            critic.parameters(), self.config.critic_lr, self.config, fused=False)

    def holds_reference(self) -> bool:
        return self.config.kl_coef > 0

    def rollout(self) -> Batch:
        return self.sample_completions(self.next_prompts(self.config.prompts_per_step))

    def compute_targets(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        kl = self.reference_kl(batch)  # (B, N) k1 per token
        rewards = kl_shaped_rewards(batch.rewards, kl, batch.mask, cfg.kl_coef)  # (B, N)
        with torch.no_grad():
            batch.old_values = self.values(batch)  # (B, N)
        adv, batch.returns = gae(rewards, batch.old_values, batch.mask, gamma=cfg.gamma,
                                 lam=cfg.lam)  # (B, N) each
        batch.advantages = whiten(adv, batch.mask) if cfg.whiten_advantages else adv
        return {}

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logprobs = self.policy_logprobs(batch)  # (B, N)
        loss, stats = ppo_policy_loss(
            logprobs, batch.old_logprobs, batch.advantages, mask=batch.mask,
            clip_eps=cfg.clip_eps, clip_eps_high=cfg.clip_eps_high, agg=cfg.agg)
        metrics = surrogate_metrics(loss, stats, logprobs, batch)
        vloss, vstats = value_loss(self.values(batch), batch.old_values, batch.returns,
                                   batch.mask, clip_range=cfg.value_clip)
        metrics.update(value_loss=float(vloss.detach()), value_clip_frac=vstats["clip_frac"])
        return loss + cfg.vf_coef * vloss, metrics

    # ------------------------------------------------------------------ the critic ----
    def values(self, batch: Batch) -> torch.Tensor:
        """Critic values (b, N): ``V`` of the state before each completion token."""
        P = batch.prompt_ids.shape[1]
        seq = torch.cat([batch.prompt_ids, batch.tokens], dim=1)  # (b, P + N)
        return self.critic(seq[:, :-1])[:, P - 1:] * batch.mask  # (b, N)


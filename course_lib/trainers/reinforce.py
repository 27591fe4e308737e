"""REINFORCE with a baseline, and RLOO: policy gradient without clipping or a critic.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". Williams 1992 (REINFORCE); RLOO is the
leave-one-out baseline of Kool et al. 2019, used for LLMs by Ahmadian et al. 2024
("Back to Basics"): with G samples of one prompt,
``A_i = r_i - 1/(G-1) sum_{j != i} r_j = G/(G-1) (r_i - mean(r))``.

The loss is ``-mean_i A_i * sum_t log pi(o_{i,t})``, whose gradient is the REINFORCE
estimator. It is computed with course_lib's ``ppo_policy_loss`` with ``old = logprobs``
detached (ratio exactly 1, so the clip never acts) and aggregation
``"seq-mean-token-sum"``: this makes visible that PPO's surrogate *is* REINFORCE at ratio 1.
An optional sequence-level KL penalty ``kl_coef * sum_t (log pi_old - log pi_ref)`` is
subtracted from the reward, as in Ahmadian et al.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_lib.grpo import compute_group_advantages
from course_lib.model import completion_logprobs
from course_lib.ppo import ppo_policy_loss
from course_lib.trainers.base import Batch, Trainer, TrainerConfig, frozen_copy

__all__ = ["ReinforceConfig", "ReinforceTrainer"]


@dataclass
class ReinforceConfig(TrainerConfig):
    """REINFORCE / RLOO settings (16 prompts x 8 samples: GRPO's sample budget)."""

    group_size: int = 8
    """Samples per prompt (>= 2 for the "rloo" and "mean" baselines)."""
    baseline: str = "rloo"
    """"rloo" (leave-one-out mean of the other samples), "mean" (the group mean, including
    the sample itself), "none" (plain REINFORCE, A = r)."""
    kl_coef: float = 0.0
    """Sequence-level KL penalty in the reward (0: no reference model)."""
    lr: float = 5e-4

    def validate(self) -> None:
        super().validate()
        if self.baseline not in ("rloo", "mean", "none"):
            raise ValueError(f"baseline must be 'rloo', 'mean' or 'none', got {self.baseline!r}")
        if self.group_size < 1 or (self.baseline != "none" and self.group_size < 2):
            raise ValueError(f"group_size G must be >= 2 for the {self.baseline!r} baseline "
                             f"(>= 1 without baseline), got {self.group_size}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")


class ReinforceTrainer(Trainer):
    """REINFORCE with a group baseline (RLOO by default). See the module docstring."""

    config_cls = ReinforceConfig
    name = "reinforce"

    def __init__(self, policy, task, config: ReinforceConfig | None = None):
        super().__init__(policy, task, config)
        if self.config.kl_coef > 0:
            self.reference = frozen_copy(policy)

    def rollout(self) -> Batch:
        return self.sample_groups(self.config.prompts_per_step, self.config.group_size)

    def compute_targets(self, batch: Batch) -> None:
        cfg = self.config
        G = cfg.group_size
        rewards = batch.rewards  # (B,)
        kl = torch.zeros_like(rewards)
        if self.reference is not None:
            with torch.no_grad():
                ref = completion_logprobs(self.reference, batch.prompt_ids, batch.tokens,
                                          batch.mask, temperature=cfg.temperature,
                                          top_k=cfg.top_k)
            kl = ((batch.old_logprobs - ref) * batch.mask).sum(-1)  # (B,) sequence k1
            rewards = rewards - cfg.kl_coef * kl
        batch.kl = float(kl.mean())
        grouped = rewards.view(-1, G) if G >= 2 else rewards.view(-1, 1)  # (B/G, G)
        if cfg.baseline == "none":
            adv = grouped
        else:
            adv = compute_group_advantages(grouped, scale="none")  # r - mean(r)
            if cfg.baseline == "rloo":
                adv = adv * G / (G - 1)  # = r_i - mean of the other G - 1
        batch.advantages = adv.reshape(-1)  # (B,)
        batch.degenerate_frac = float((grouped == grouped[:, :1]).all(-1).float().mean())

    def update(self, batch: Batch) -> dict[str, float]:
        logprobs = self.policy_logprobs(batch)  # (B, N)
        adv = batch.advantages[:, None].expand_as(logprobs)  # (B, N) same A on every token
        loss, _ = ppo_policy_loss(logprobs, logprobs.detach(), adv, batch.mask,
                                  agg="seq-mean-token-sum")  # ratio 1: plain REINFORCE
        norm = self.optimizer_step(loss)
        return {"loss": float(loss.detach()), "kl": batch.kl, "clip_frac": 0.0,
                "grad_norm": norm, "degenerate_frac": batch.degenerate_frac}

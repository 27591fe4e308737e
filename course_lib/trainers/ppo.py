"""PPO trainer in the InstructGPT style: critic, per-token KL penalty in the reward, GAE.

Chapter: "PPO for language models" (and "Comparing PPO, GRPO, REINFORCE and DPO").
Ouyang et al. 2022 (InstructGPT, Eq. 2) and Stiennon et al. 2020; OpenAI's
lm-human-preferences code for GAE (gamma 1, lambda 0.95) and whitening:

1. rollout: ``prompts_per_step`` training prompts, one completion each;
2. score: the task's verifier (a rule, so no reward model is held);
3. targets: per-token reward ``r_t = -kl_coef * (log pi_old - log pi_ref)``, plus the
   verifier's score on the last real token; the critic's values ``V(s_t)``; ``gae`` gives
   advantages and returns; advantages are whitened (``whiten``);
4.-5. ``mu`` epochs of ``minibatches`` minibatch steps on
   ``ppo_policy_loss + vf_coef * value_loss`` (policy and critic have separate Adam
   optimisers);
6. log reward, policy and value loss, KL to the reference, clip fractions.

The critic is a separate :class:`~course_lib.model.ValueModel` (its body starts as a copy
of the policy when the policy is a TinyGPT, its scalar head at 0). Models held: policy and
critic (trained), reference (frozen, only if ``kl_coef > 0``); the rule-based reward needs
no fourth model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from course_lib.model import ModelConfig, ValueModel, completion_logprobs
from course_lib.ppo import gae, ppo_policy_loss, value_loss, whiten
from course_lib.trainers.base import Batch, Trainer, TrainerConfig, frozen_copy

__all__ = ["PPOConfig", "PPOTrainer"]


@dataclass
class PPOConfig(TrainerConfig):
    """PPO settings. One completion per prompt, so 128 prompts per step give the same
    sample budget as GRPO's 16 prompts x 8."""

    prompts_per_step: int = 128
    mu: int = 1
    """Epochs over each batch (PPO's K; InstructGPT-style code uses 1-4)."""
    minibatches: int = 1
    """Minibatches per epoch."""
    clip_eps: float = 0.2
    """Clip range of the policy ratio."""
    kl_coef: float = 0.02
    """beta of the per-token KL penalty folded into the reward (InstructGPT 0.02);
    0: no reference model."""
    gamma: float = 1.0
    """Discount (1: the usual choice for language, lm-human-preferences)."""
    lam: float = 0.95
    """GAE lambda (lm-human-preferences: 0.95)."""
    vf_coef: float = 0.5
    """Weight of the value loss in the total loss."""
    value_clip: float = 0.2
    """Clip range of the value loss (in reward units)."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    whiten_advantages: bool = True
    """Whiten advantages over the batch (lm-human-preferences)."""
    agg: str = "token-mean"
    """Aggregation of the per-token policy loss (see ``ppo_policy_loss``)."""
    lr: float = 5e-4

    def validate(self) -> None:
        super().validate()
        if self.mu < 1 or self.minibatches < 1:
            raise ValueError(f"mu and minibatches must be >= 1, got {self.mu}, "
                             f"{self.minibatches}")
        if self.minibatches > self.prompts_per_step:
            raise ValueError(f"minibatches ({self.minibatches}) > prompts_per_step "
                             f"({self.prompts_per_step})")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if not self.critic_lr > 0 or self.vf_coef < 0 or not self.value_clip > 0:
            raise ValueError("critic_lr and value_clip must be > 0 and vf_coef >= 0")


class PPOTrainer(Trainer):
    """PPO with a critic and a KL-shaped reward. See the module docstring."""

    config_cls = PPOConfig
    name = "ppo"

    def __init__(self, policy, task, config: PPOConfig | None = None,
                 critic: torch.nn.Module | None = None):
        super().__init__(policy, task, config)
        cfg = self.config
        if critic is None:
            block = task.prompt_len + self.max_new_tokens
            critic = ValueModel.from_policy(
                policy, ModelConfig(block_size=max(32, block)), seed=cfg.seed)
        self.critic = critic
        self.critic_optimizer = torch.optim.AdamW(
            critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay,
            betas=tuple(cfg.adam_betas))
        if cfg.kl_coef > 0:
            self.reference = frozen_copy(policy)

    def values(self, batch: Batch) -> torch.Tensor:
        """Critic values (B, N): ``V`` of the state before each completion token."""
        P = batch.prompt_ids.shape[1]
        seq = torch.cat([batch.prompt_ids, batch.tokens], dim=1)  # (B, P + N)
        return self.critic(seq[:, :-1])[:, P - 1:] * batch.mask  # (B, N)

    def updates_per_step(self) -> int:
        return self.config.mu * self.config.minibatches

    def rollout(self) -> Batch:
        return self.sample_completions(self.next_prompts(self.config.prompts_per_step))

    def compute_targets(self, batch: Batch) -> None:
        cfg = self.config
        mask = batch.mask  # (B, N)
        with torch.no_grad():
            batch.old_values = self.values(batch)  # (B, N)
            if self.reference is not None:
                ref = completion_logprobs(self.reference, batch.prompt_ids, batch.tokens, mask,
                                          temperature=cfg.temperature, top_k=cfg.top_k)
                kl = (batch.old_logprobs - ref) * mask  # (B, N) k1 per token
            else:
                kl = torch.zeros_like(mask)
        rewards = -cfg.kl_coef * kl  # (B, N) InstructGPT: R = r - beta log(pi/pi_ref)
        last = (mask.sum(-1).long() - 1).clamp(min=0)  # (B,) index of the last real token
        rewards[torch.arange(len(last)), last] += batch.rewards  # score at the end
        adv, ret = gae(rewards, batch.old_values, mask, gamma=cfg.gamma, lam=cfg.lam)
        batch.advantages = whiten(adv, mask) if cfg.whiten_advantages else adv  # (B, N)
        batch.returns = ret  # (B, N)
        batch.kl = float(kl.sum() / mask.sum())

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        B = batch.tokens.shape[0]
        logs: dict[str, list[float]] = {"loss": [], "value_loss": [], "clip_frac": [],
                                        "value_clip_frac": [], "approx_kl": []}
        for _ in range(cfg.mu):
            perm = torch.randperm(B, generator=self.generator)
            for idx in perm.chunk(cfg.minibatches):
                mb = {k: batch[k][idx] for k in ("prompt_ids", "tokens", "mask", "old_logprobs",
                                                "advantages", "returns", "old_values")}
                logprobs = completion_logprobs(self.policy, mb["prompt_ids"], mb["tokens"],
                                               mb["mask"], temperature=cfg.temperature,
                                               top_k=cfg.top_k)  # (b, N)
                pl, pst = ppo_policy_loss(logprobs, mb["old_logprobs"], mb["advantages"],
                                          mb["mask"], clip_eps=cfg.clip_eps, agg=cfg.agg)
                values = self.values(Batch(mb))  # (b, N)
                vl, vst = value_loss(values, mb["old_values"], mb["returns"], mb["mask"],
                                     clip_range=cfg.value_clip)
                loss = pl + cfg.vf_coef * vl
                self.optimizer.zero_grad(set_to_none=True)
                self.critic_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
                    torch.nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.critic_optimizer.step()
                logs["loss"].append(float(pl.detach()))
                logs["value_loss"].append(float(vl.detach()))
                logs["clip_frac"].append(pst["clip_frac"])
                logs["value_clip_frac"].append(vst["clip_frac"])
                logs["approx_kl"].append(pst["approx_kl"])
        out = {k: sum(v) / len(v) for k, v in logs.items()}
        out["kl"] = batch.kl
        return out

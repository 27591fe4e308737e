"""The one skeleton every trainer shares: sample -> score -> targets -> loss -> update -> log.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". Following Spinning Up, each algorithm
fills in the same pieces, so a diff between two trainers shows exactly their conceptual
difference:

============  ==============================================================================
piece         what the subclass defines
============  ==============================================================================
rollout       which prompts, how many completions each (GRPO: groups of G; PPO: one each;
              DPO: a minibatch of precomputed preference pairs, no sampling during training)
score         the task's verifier (same for all online trainers)
targets       GRPO: group advantages; PPO: KL-shaped per-token rewards, critic values, GAE;
              REINFORCE/RLOO: reward minus a baseline; DPO: nothing (pairs are the target)
loss          ``grpo_loss`` / ``ppo_policy_loss + value_loss`` / REINFORCE surrogate /
              ``dpo_loss``, all from course_lib's pure functions
update        ``mu`` optimiser steps per batch, gradient norm clipped
log           one entry per step in ``trainer.history``, held-out accuracy every
              ``eval_every`` steps
============  ==============================================================================

The trainers use the policy only through :func:`~course_lib.model.forward_logits` (via
:func:`~course_lib.model.sample` and :func:`~course_lib.model.completion_logprobs`), so a
Hugging Face causal LM works as well as a TinyGPT.
"""

from __future__ import annotations

import copy
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn

from course_lib.model import Samples, completion_logprobs, count_parameters, sample
from course_lib.trainers.evaluate import evaluate

__all__ = ["TrainerConfig", "Trainer", "Batch", "frozen_copy"]


@dataclass
class TrainerConfig:
    """Settings every trainer shares (each trainer's config adds its own fields)."""

    steps: int = 200
    """Number of training steps (one rollout + ``mu`` updates each)."""
    prompts_per_step: int = 16
    """Distinct training prompts per step."""
    lr: float = 1e-3
    """Adam learning rate of the policy."""
    temperature: float = 1.0
    """Sampling temperature (> 0); the loss uses log-probs at the same temperature."""
    top_k: int | None = None
    """Sample only among the k most likely tokens (None: all)."""
    max_new_tokens: int | None = None
    """Completion budget; None: the task's ``max_new_tokens`` (4 for AdditionTask)."""
    grad_clip: float = 1.0
    """Maximum global gradient norm (None or 0: no clipping)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up over this many optimiser steps (0: none)."""
    lr_schedule: str = "constant"
    """After the warm-up: "constant", or "linear" (decay to 0 at the last optimiser step,
    the shape of Hugging Face's "linear" schedule, TRL's default)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""
    eval_every: int = 10
    """Greedy held-out accuracy every this many steps (0: only before and after training)."""
    eval_split: str = "test"
    """Split used for the periodic evaluation ("test" = the held-out prompts)."""
    stop_at_accuracy: float | None = None
    """Stop early once an evaluation reaches this accuracy (None: run all steps)."""
    seed: int = 0
    """Seed of prompt order and sampling; the same seed gives identical histories."""
    reuse_rollout_forward: bool = True
    """On-policy shortcut of GRPO (with ``mu`` = 1) and REINFORCE: the rollout samples with
    gradient and the single update backpropagates through the sampling forward pass
    instead of running the same forward pass again (same weights, same tokens, so the same
    log-probs); about 20% less time per step on the running example, same result up to
    float rounding. Sampling runs the policy in eval mode, so with dropout > 0 set this to
    False to train on dropout-on log-probs."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work (called by the trainer)."""
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.prompts_per_step < 1:
            raise ValueError(f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be None or >= 1, got {self.top_k}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if self.eval_split not in ("train", "test"):
            raise ValueError(f"eval_split must be 'train' or 'test', got {self.eval_split!r}")
        if self.stop_at_accuracy is not None and not 0 < self.stop_at_accuracy <= 1:
            raise ValueError(f"stop_at_accuracy must be in (0, 1], got {self.stop_at_accuracy}")
        if self.lr_schedule not in ("constant", "linear"):
            raise ValueError(f"lr_schedule must be 'constant' or 'linear', "
                             f"got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not all(0 <= b < 1 for b in self.adam_betas) or len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 or None, got {self.grad_clip}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Field name -> type, for the CLI."""
        return {f.name: str(f.type) for f in fields(cls)}


class Batch(dict):
    """A rollout: a dict of tensors and lists, also readable as attributes (``batch.mask``).

    Online trainers fill: ``prompts`` (list of B str), ``prompt_ids`` (B, P), ``tokens``
    (B, N), ``mask`` (B, N), ``old_logprobs`` (B, N), ``texts`` (list of B str),
    ``rewards`` (B,), then their targets (``advantages`` ...).
    """

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` (a reference model)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class Trainer:
    """Base class: the loop, logging and evaluation; subclasses fill the pieces.

    Subclasses implement :meth:`rollout`, :meth:`compute_targets` and :meth:`update`
    (and may override :meth:`score`). ``trainer.train()`` runs ``config.steps`` steps and
    returns ``trainer.history``, a dict of equal-length lists with one entry per step
    (``step``, ``samples``, ``wall``, ``loss`` and the trainer's metrics) plus
    ``eval_step``/``eval_accuracy``/``eval_wall``/``eval_samples`` (held-out accuracy before
    training and every ``eval_every`` steps). ``wall`` counts seconds since ``train()``
    started, evaluation time included.
    """

    config_cls = TrainerConfig
    name = "trainer"

    def __init__(self, policy: nn.Module, task, config: TrainerConfig | None = None):
        self.config = cfg = config if config is not None else self.config_cls()
        if not isinstance(cfg, self.config_cls):
            raise ValueError(f"{type(self).__name__} needs a {self.config_cls.__name__}, "
                             f"got {type(cfg).__name__}")
        cfg.validate()
        if len(task.train) == 0:
            raise ValueError("the task has no training prompts (empty task)")
        self.policy, self.task = policy, task
        self.max_new_tokens = cfg.max_new_tokens or task.max_new_tokens
        self.rng = random.Random(cfg.seed)  # prompt order
        self.generator = torch.Generator().manual_seed(cfg.seed)  # sampling
        params = [p for p in policy.parameters() if p.requires_grad]
        # fused: one kernel for all parameters (CPU and CUDA float tensors); same update
        fused = all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda")
                    for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                           betas=tuple(cfg.adam_betas), fused=fused or None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.reference: nn.Module | None = None
        self.critic: nn.Module | None = None
        self.history: dict[str, list] = defaultdict(list)
        self.samples_used = 0
        self.step_count = 0
        self._order: list[str] = []
        self._t0: float | None = None

    def updates_per_step(self) -> int:
        """Optimiser steps per training step (GRPO: mu; PPO: mu x minibatches)."""
        return 1

    def _lr_factor(self, i: int) -> float:
        """Learning-rate multiplier at optimiser step ``i`` (0-based)."""
        cfg = self.config
        if i < cfg.warmup_steps:
            return (i + 1) / (cfg.warmup_steps + 1)
        if cfg.lr_schedule == "constant":
            return 1.0
        total = max(1, cfg.steps * self.updates_per_step())  # optimiser steps of the run
        return max(0.0, (total - i) / max(1, total - cfg.warmup_steps))

    # ------------------------------------------------------------------ pieces ----
    def next_prompts(self, n: int) -> list[str]:
        """``n`` training prompts: passes over the shuffled training set, without
        replacement inside a pass (reshuffled with the trainer's seed)."""
        out = []
        while len(out) < n:
            if not self._order:
                self._order = list(self.task.train)
                self.rng.shuffle(self._order)
            out.append(self._order.pop())
        return out

    def sample_completions(self, prompts: list[str], grad: bool = False) -> Batch:
        """Sample one completion per entry of ``prompts`` with the current policy. With
        ``grad`` the batch also holds ``logprobs`` (B, N) with their autograd graph, which
        the next :meth:`policy_logprobs` returns instead of recomputing them."""
        prompt_ids = self.task.encode_prompts(prompts)  # (B, P)
        out: Samples = sample(self.policy, prompt_ids, self.max_new_tokens,
                              temperature=self.config.temperature, top_k=self.config.top_k,
                              generator=self.generator, grad=grad)
        texts = [self.task.decode(row) for row in out.tokens]
        self.samples_used += len(prompts)
        batch = Batch(prompts=prompts, prompt_ids=prompt_ids, tokens=out.tokens,
                      mask=out.mask, old_logprobs=out.logprobs.detach(), texts=texts)
        if grad:
            batch.logprobs = out.logprobs  # (B, N), graph to the current weights
        return batch

    def sample_groups(self, n_prompts: int, group_size: int) -> Batch:
        """``group_size`` completions for each of ``n_prompts`` prompts (GRPO, RLOO): each
        prompt repeated next to itself, so rows g*G .. g*G+G-1 form group g. With a single
        optimiser step per batch (and ``reuse_rollout_forward``) the rollout keeps its graph:
        that one update's forward pass is the sampling pass."""
        prompts = self.next_prompts(n_prompts)
        grad = self.config.reuse_rollout_forward and self.updates_per_step() == 1
        return self.sample_completions([p for p in prompts for _ in range(group_size)], grad)

    def policy_logprobs(self, batch: Batch) -> torch.Tensor:
        """Log-probs (B, N) of the batch's completions under the current policy, with
        gradient: the rollout's own (taken out of the batch, so only the first update after
        an on-policy rollout uses them) if it kept them, else a new forward pass."""
        if "logprobs" in batch:
            return batch.pop("logprobs")
        cfg = self.config
        return completion_logprobs(self.policy, batch.prompt_ids, batch.tokens, batch.mask,
                                   temperature=cfg.temperature, top_k=cfg.top_k)  # (B, N)

    def rollout(self) -> Batch:
        raise NotImplementedError

    def score(self, batch: Batch) -> None:
        """The verifier: ``batch.rewards`` (B,) from the task's reward function."""
        batch.rewards = self.task.rewards(batch.prompts, batch.texts)  # (B,)

    def compute_targets(self, batch: Batch) -> None:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def optimizer_step(self, loss: torch.Tensor, params=None, optimizer=None) -> float:
        """Backward, clip the gradient norm, step; returns the gradient norm."""
        opt = optimizer or self.optimizer
        opt.zero_grad(set_to_none=True)
        loss.backward()
        ps = params or [p for g in opt.param_groups for p in g["params"]]
        if self.config.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(ps, self.config.grad_clip)
        else:
            norm = torch.sqrt(sum((p.grad ** 2).sum() for p in ps if p.grad is not None))
        opt.step()
        if opt is self.optimizer:
            self.scheduler.step()
        return float(norm)

    # ------------------------------------------------------------------- loop -----
    def step(self) -> dict[str, float]:
        """One iteration of the skeleton; returns the logged metrics of this step."""
        batch = self.rollout()            # 1. sample
        self.score(batch)                 # 2. score
        self.compute_targets(batch)       # 3. advantages / targets
        stats = self.update(batch)        # 4.-5. loss and update
        self.step_count += 1
        return self.log(batch, stats)     # 6. log

    def log(self, batch: Batch, stats: dict[str, float]) -> dict[str, float]:
        entry = {"step": self.step_count, "samples": self.samples_used,
                 "wall": time.perf_counter() - self._t0 if self._t0 is not None else 0.0}
        if "rewards" in batch:
            entry["reward_mean"] = float(batch.rewards.mean())
        if "mask" in batch:
            entry["response_len"] = float(batch.mask.sum(-1).mean())
        if "texts" in batch and hasattr(self.task, "is_step_by_step"):  # the R1 task
            steps = [self.task.is_step_by_step(t) for t in batch.texts]
            entry["step_by_step_frac"] = sum(steps) / len(steps)
        entry.update(stats)
        for k, v in entry.items():
            self.history[k].append(v)
        return entry

    def run_eval(self) -> float:
        acc = evaluate(self.policy, self.task, split=self.config.eval_split)
        self.history["eval_step"].append(self.step_count)
        self.history["eval_samples"].append(self.samples_used)
        self.history["eval_accuracy"].append(acc)
        self.history["eval_wall"].append(
            time.perf_counter() - self._t0 if self._t0 is not None else 0.0)
        return acc

    def train(self, progress: bool = True) -> dict[str, list]:
        """Run ``config.steps`` steps (or until ``stop_at_accuracy``); returns the history."""
        from tqdm.auto import tqdm

        cfg = self.config
        self._t0 = time.perf_counter()
        if not self.history.get("eval_step"):
            acc = self.run_eval()
        else:
            acc = self.history["eval_accuracy"][-1]
        bar = tqdm(total=cfg.steps, desc=self.name, disable=not progress, leave=False)
        start = self.step_count
        while self.step_count - start < cfg.steps:
            entry = self.step()
            last = self.step_count - start == cfg.steps
            if (cfg.eval_every and self.step_count % cfg.eval_every == 0) or last:
                acc = self.run_eval()
            bar.update(1)
            bar.set_postfix(reward=f"{entry.get('reward_mean', float('nan')):.2f}",
                            acc=f"{acc:.2f}", refresh=False)
            if cfg.stop_at_accuracy is not None and acc >= cfg.stop_at_accuracy:
                if self.history["eval_step"][-1] != self.step_count:
                    self.run_eval()
                break
        bar.close()
        self.history = dict(self.history)
        self._t0 = None
        return self.history

    # --------------------------------------------------------------- reporting ----
    def parameters_held(self) -> dict[str, int]:
        """Parameters of each model in memory: policy, critic, reference (0 if absent)."""
        return {"policy": count_parameters(self.policy),
                "critic": count_parameters(self.critic),
                "reference": count_parameters(self.reference)}

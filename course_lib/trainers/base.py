"""The one skeleton every trainer shares: sample -> score -> targets -> loss -> update -> log.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". Following Spinning Up, each algorithm
fills in the same pieces, so a diff between two trainers shows exactly their conceptual
difference:

===============  ===========================================================================
piece            what the subclass defines
===============  ===========================================================================
rollout          which prompts, how many completions each (GRPO, RLOO: groups of G; PPO: one
                 each; DPO: a minibatch of precomputed preference pairs, no sampling)
score            shared: the task's verifier, and the frozen reference's log-probs when the
                 trainer holds one (for a KL)
compute_targets  GRPO: group advantages; PPO: KL-shaped per-token rewards, critic values,
                 GAE; REINFORCE/RLOO: reward minus a baseline; DPO: nothing (the pairs are
                 the target). Returns the metrics of the targets.
loss             ``grpo_loss`` / ``ppo_policy_loss + value_loss`` / the REINFORCE surrogate /
                 ``dpo_loss``, all from course_lib's pure functions, on one minibatch
update           shared: one :meth:`Trainer.optimizer_step` per minibatch of
                 :meth:`Trainer.minibatches` (GRPO and PPO: ``mu`` passes of ``minibatches``
                 parts; REINFORCE, DPO: one), gradient norm clipped
log              shared: one entry per step in ``trainer.history``, held-out accuracy every
                 ``eval_every`` steps; every key is defined once, in
                 :data:`course_lib.trainers.metrics.METRICS`
===============  ===========================================================================

The trainers use the policy only through :func:`~course_lib.model.forward_logits` (via
:func:`~course_lib.model.sample` and :func:`~course_lib.model.completion_logprobs`), so a
Hugging Face causal LM works as well as a TinyGPT.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib._checks import (
    ClipRange,
    Count,
    NonNegative,
    Positive,
    PositiveInt,
    UnitInterval,
    check_fields,
    check_in_range,
    check_int,
)
from course_lib.evaluate import evaluate
from course_lib.model import completion_logprobs, count_parameters, sample
from course_lib.surrogate import masked_mean
from course_lib.tasks import PAD_ID, SPLITS
from course_lib.trainers.metrics import equal_reward_groups, group_metrics, mean_over_steps

__all__ = ["TrainerConfig", "OnlineConfig", "GroupConfig", "ClipConfig", "Trainer", "Batch",
           "frozen_copy", "adamw", "LR_SCHEDULES", "PROMPT_SAMPLING"]

#: What the learning rate does after the warm-up (see :meth:`Trainer.lr_factor`).
LR_SCHEDULES = ("constant", "linear")
#: How the online trainers pick each step's training prompts (see :meth:`Trainer.next_prompts`).
PROMPT_SAMPLING = ("uniform", "prioritized")


#: An accuracy to reach, in (0, 1].
Accuracy = Annotated[float, functools.partial(check_in_range, low=0.0, high=1.0, low_open=True)]


@dataclass
class TrainerConfig:
    """Settings every trainer shares (each trainer's config adds its own fields). Each
    field's type carries its constraint (:mod:`course_lib._checks`)."""

    steps: Count = 200
    """Number of training steps (one rollout and its updates each)."""
    prompts_per_step: PositiveInt = 16
    """Distinct training prompts per step."""
    lr: Positive = 5e-4
    """AdamW learning rate of the policy (the online trainers' default; DPO sets its own)."""
    temperature: Positive = 1.0
    """Sampling temperature; the loss uses log-probs at the same temperature."""
    top_k: PositiveInt | None = None
    """Sample only among the k most likely tokens (None: all)."""
    max_new_tokens: PositiveInt | None = None
    """Completion budget (None: the task's)."""
    grad_clip: NonNegative = 1.0
    """Maximum L2 norm of each model's gradient (0: no clipping)."""
    weight_decay: NonNegative = 0.0
    """AdamW weight decay."""
    warmup_steps: Count = 0
    """Optimiser steps of linear learning-rate warm-up from 0 (0: none)."""
    lr_schedule: Literal[LR_SCHEDULES] = "constant"
    """After the warm-up: constant, or linear decay to 0 at the last optimiser step."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW's (beta1, beta2), each in [0, 1)."""
    eval_every: Count = 10
    """Greedy accuracy on eval_split every this many steps (0: before and after only)."""
    eval_split: Literal[SPLITS] = "test"
    """Prompts of the periodic evaluation (test: the held-out ones)."""
    stop_at_accuracy: Accuracy | None = None
    """Stop at the first evaluation with at least this accuracy (None: run all steps)."""
    seed: int = 0
    """Seed of prompt order and sampling; the same seed gives the same history."""
    reuse_rollout_forward: bool = True
    """Backpropagate through the sampling pass when a batch gets one optimiser step.
    Same log-probs as a second forward pass, less time; sampling runs in eval mode (no dropout)."""

    def validate(self) -> None:
        """Raise ValueError for settings that cannot work (called by the trainer): each
        field against its type (:func:`course_lib._checks.check_fields`), then the
        constraints that involve several values (subclasses add theirs)."""
        check_fields(self)
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be two numbers, got {self.adam_betas}")
        for beta in self.adam_betas:
            check_in_range("adam_betas", beta, 0.0, 1.0, high_open=True)


@dataclass
class OnlineConfig(TrainerConfig):
    """Settings of the online trainers (GRPO, PPO, REINFORCE), which sample completions of
    training prompts at every step."""

    prompt_sampling: Literal[PROMPT_SAMPLING] = "uniform"
    """uniform: passes over the shuffled training set; prioritized: Kimi k1.5's prioritized
    sampling, probability of prompt i proportional to max(1 - s_i, priority_floor), s_i the
    share correct in its last rollout (never sampled: s_i = 0). Logs train_unsolved."""
    priority_floor: UnitInterval = 0.2
    """Smallest sampling weight of a prompt (prioritized sampling): solved prompts stay in
    the mix, at this weight against 1 for a prompt with no correct completion."""


@dataclass
class GroupConfig(OnlineConfig):
    """Settings of the trainers that sample G completions of each prompt and take their
    baseline from the group (GRPO, REINFORCE/RLOO)."""

    group_size: PositiveInt = 8
    """G, completions per prompt (DeepSeekMath 64, R1 16, TRL 8)."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: drop the groups whose rewards are all equal and sample new
    prompts until prompts_per_step groups are kept (Trainer.sample_informative_groups)."""
    max_sampling_rounds: PositiveInt = 4
    """Most rounds of sampling per step with dynamic_sampling (then train on what was kept)."""

    def group_baseline(self) -> bool:
        """Whether the advantages subtract a baseline taken from the group (then G >= 2)."""
        return True

    def validate(self) -> None:
        super().validate()
        if self.group_baseline():
            check_int("group_size", self.group_size, 2, "one completion has no group baseline")
        if self.dynamic_sampling:
            check_int("group_size", self.group_size, 2, "dynamic sampling keeps the groups "
                      "whose rewards differ, and one reward never differs")


@dataclass
class ClipConfig(OnlineConfig):
    """Settings of the trainers that reuse each batch and clip the ratio (GRPO, PPO)."""

    mu: PositiveInt = 1
    """Passes over each batch (GRPO's mu, PPO's epochs K); one pass of one minibatch: no clip."""
    clip_eps: ClipRange = 0.2
    """Lower clip range of the ratio."""
    clip_eps_high: ClipRange | None = None
    """Upper clip range (None: clip_eps; DAPO's clip-higher: 0.28)."""
    minibatches: PositiveInt = 1
    """Minibatches per pass (PPO's M; a new random split every pass when M > 1)."""

    def validate(self) -> None:
        super().validate()
        if self.minibatches > self.prompts_per_step:
            raise ValueError(f"minibatches ({self.minibatches}) > prompts_per_step "
                             f"({self.prompts_per_step}): a minibatch would hold no prompt")


@dataclass
class Batch:
    """A rollout of B completions and what the trainer computes from it.

    Rows that share a prompt sit next to each other (GRPO's groups: rows g*G .. g*G+G-1).
    The first block is filled by :meth:`Trainer.sample_completions` (``group_size`` by
    :meth:`Trainer.sample_groups`), the second by :meth:`Trainer.score` and
    ``compute_targets``.
    """

    prompts: list[str]
    """B prompts (text)."""
    prompt_ids: torch.Tensor
    """(B, P) prompt token ids."""
    tokens: torch.Tensor
    """(B, N) completion token ids, right-padded."""
    mask: torch.Tensor
    """(B, N) float, 1 on real completion tokens (up to and including the first EOS)."""
    old_logprobs: torch.Tensor
    """(B, N) log pi_old of the tokens under the sampling distribution, no gradient."""
    entropy: torch.Tensor
    """(B, N) entropy of the sampling distribution at each token, 0 on padding."""
    texts: list[str]
    """B completions (text)."""
    group_size: int | None = None
    """G when the rows form groups of G completions of one prompt (GRPO, RLOO), else None."""
    sampling_rounds: int | None = None
    """Rounds of sampling behind the batch (dynamic sampling), else None."""
    logprobs: torch.Tensor | None = None
    """(B, N) the same log-probs with their graph when the rollout kept it
    (``reuse_rollout_forward``); :meth:`Trainer.policy_logprobs` takes them out."""
    rewards: torch.Tensor | None = None
    """(B,) verifier rewards."""
    correct: torch.Tensor | None = None
    """(B,) bool, the verifier's verdict (exact final answer)."""
    ref_logprobs: torch.Tensor | None = None
    """(B, N) log pi_ref at the sampling temperature, no gradient (None: no reference)."""
    advantages: torch.Tensor | None = None
    """(B,) one per completion (GRPO, REINFORCE) or (B, N) per token (PPO)."""
    returns: torch.Tensor | None = None
    """(B, N) PPO's value targets."""
    old_values: torch.Tensor | None = None
    """(B, N) PPO's critic values at sampling time."""

    def __len__(self) -> int:
        return len(self.prompts)

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """The rows of several batches of one task, in order, as one batch. The (B, N)
        fields are right-padded to the longest N (``PAD_ID`` tokens, 0 elsewhere, so the
        mask is 0 on the padding); a field that is None must be None in every batch."""
        n = max(b.tokens.shape[1] for b in batches)

        def join(name, values):
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError(f"Batch.cat: field {name!r} is None in some batches only")
            if isinstance(values[0], list):
                return [x for v in values for x in v]
            if not isinstance(values[0], torch.Tensor):  # group_size
                if len(set(values)) != 1:
                    raise ValueError(f"Batch.cat: field {name!r} differs: {values}")
                return values[0]
            if name in _PER_TOKEN and values[0].dim() == 2:  # (B, N); GRPO's advantages: (B,)
                pad = PAD_ID if name == "tokens" else 0
                values = [F.pad(v, (0, n - v.shape[1]), value=pad) for v in values]
            return torch.cat(values)

        return Batch(**{f.name: join(f.name, [getattr(b, f.name) for b in batches])
                        for f in dataclasses.fields(Batch)})

    def rows(self, idx: torch.Tensor) -> Batch:
        """The batch restricted to the rows ``idx`` (1-D LongTensor), every field alike."""
        def pick(v):
            if isinstance(v, torch.Tensor):
                return v[idx]
            return [v[i] for i in idx.tolist()] if isinstance(v, list) else v
        return Batch(**{f.name: pick(getattr(self, f.name)) for f in dataclasses.fields(self)})


#: the fields of :class:`Batch` that hold one value per completion token when (B, N)
_PER_TOKEN = ("tokens", "mask", "old_logprobs", "entropy", "logprobs", "ref_logprobs",
              "advantages", "returns", "old_values")


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with ``requires_grad=False`` (a reference model)."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def adamw(params, lr: float, cfg: TrainerConfig, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with the config's weight decay and betas. ``fused``: one kernel for all
    parameters when every one is a CPU/CUDA float tensor (the same update up to float
    rounding, faster); else PyTorch's per-parameter loop."""
    params = list(params)
    fused = fused and all(p.dtype in (torch.float32, torch.float64)
                          and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay,
                             betas=tuple(cfg.adam_betas), fused=fused or None)


class Trainer:
    """Base class: the loop, the update, logging and evaluation; subclasses fill the pieces.

    Subclasses implement :meth:`rollout`, :meth:`compute_targets` and :meth:`loss` (and may
    override :meth:`holds_reference`, :meth:`score`, :meth:`minibatches`).
    ``trainer.train()`` runs ``config.steps`` steps and returns ``trainer.history``, a dict
    of lists: one entry per step for each per-step key and one per evaluation (before
    training, every ``eval_every`` steps, after the last) for each ``eval_*`` key. The keys
    are defined in :data:`course_lib.trainers.metrics.METRICS`.
    """

    config_cls = TrainerConfig

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
        self.optimizer = adamw([p for p in policy.parameters() if p.requires_grad], cfg.lr, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        #: the optimisers :meth:`optimizer_step` steps, keyed by the metric of their
        #: gradient norm (PPO adds its critic's)
        self.optimizers = {"grad_norm": self.optimizer}
        self.reference = frozen_copy(policy) if self.holds_reference() else None
        self.critic: nn.Module | None = None
        #: (T,) prioritized sampling's s_i: share correct in training prompt i's last
        #: rollout (NaN: not sampled yet)
        self.success = torch.full((len(task.train),), float("nan"))
        self.prompt_index = {p: i for i, p in enumerate(task.train)}
        self.prompt_generator = torch.Generator().manual_seed(cfg.seed)  # prioritized draws
        self.prioritized = isinstance(cfg, OnlineConfig) and cfg.prompt_sampling == "prioritized"
        if self.prioritized and cfg.prompts_per_step > len(task.train):
            raise ValueError(f"prioritized sampling draws {cfg.prompts_per_step} distinct "
                             f"prompts per step but the task has only {len(task.train)} "
                             f"training prompts")
        self.history: dict[str, list] = defaultdict(list)
        self.samples_used = 0
        self.step_count = 0
        self._order: list[str] = []
        self._t0: float | None = None
        self._eval_seconds = 0.0

    def holds_reference(self) -> bool:
        """Whether to keep the frozen reference, a copy of the starting policy (for a KL)."""
        return False

    def updates_per_step(self) -> int:
        """Optimiser steps per training step: ``mu`` x ``minibatches`` (:class:`ClipConfig`),
        else 1."""
        cfg = self.config
        return cfg.mu * cfg.minibatches if isinstance(cfg, ClipConfig) else 1

    def lr_factor(self, i: int) -> float:
        """Multiplier of ``lr`` at optimiser step ``i`` (0-based), as Hugging Face's
        ``get_linear_schedule_with_warmup`` ("linear") and
        ``get_constant_schedule_with_warmup`` ("constant"): ``i / warmup_steps`` during the
        warm-up (so the first step has lr 0), then 1, or a linear decay to 0 at the run's
        last optimiser step, ``steps x updates_per_step()``."""
        cfg = self.config
        if i < cfg.warmup_steps:
            return i / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return 1.0
        total = cfg.steps * self.updates_per_step()  # optimiser steps of the run
        return max(0.0, (total - i) / max(1, total - cfg.warmup_steps))

    # ------------------------------------------------------------------ pieces ----
    def next_prompts(self, n: int) -> list[str]:
        """``n`` training prompts. "uniform": passes over the shuffled training set, without
        replacement inside a pass (reshuffled with the trainer's seed). "prioritized": Kimi
        Team 2025 (Kimi k1.5, arXiv:2501.12599, Sec. 2.3.4, prioritized sampling), ``n``
        distinct prompts drawn with weights ``max(1 - s_i, priority_floor)``
        (:meth:`prompt_weights`): a prompt whose group was all wrong gives no gradient now
        (its group advantages are 0) but is tried again soon."""
        if self.prioritized:
            weights = self.prompt_weights()  # (T,) one per training prompt
            idx = torch.multinomial(weights, n, replacement=False,
                                    generator=self.prompt_generator)
            return [self.task.train[i] for i in idx.tolist()]
        out = []
        while len(out) < n:
            if not self._order:
                self._order = list(self.task.train)
                self.rng.shuffle(self._order)
            out.append(self._order.pop())
        return out

    def prompt_weights(self) -> torch.Tensor:
        """(T,) the prioritized-sampling weight of each training prompt, in task order."""
        s = self.success.nan_to_num(0.0)  # never sampled: s_i = 0, weight 1
        return (1.0 - s).clamp(min=self.config.priority_floor)

    def sample_completions(self, prompts: list[str], grad: bool = False) -> Batch:
        """Sample one completion per entry of ``prompts`` with the current policy. With
        ``grad`` the batch also holds ``logprobs`` (B, N) with their autograd graph, which
        the next :meth:`policy_logprobs` returns instead of recomputing them."""
        cfg = self.config
        prompt_ids = self.task.encode_prompts(prompts)  # (B, P)
        out = sample(self.policy, prompt_ids, self.max_new_tokens, temperature=cfg.temperature,
                     top_k=cfg.top_k, generator=self.generator, grad=grad)
        self.samples_used += len(prompts)
        return Batch(prompts=prompts, prompt_ids=prompt_ids, tokens=out.tokens, mask=out.mask,
                     old_logprobs=out.logprobs.detach(), entropy=out.entropy,
                     texts=[self.task.decode(row) for row in out.tokens],
                     logprobs=out.logprobs if grad else None)

    def sample_groups(self, n_prompts: int, group_size: int) -> Batch:
        """``group_size`` completions for each of ``n_prompts`` new training prompts (GRPO,
        RLOO): each prompt repeated next to itself, so rows g*G .. g*G+G-1 form group g.
        With a single optimiser step per batch (and ``reuse_rollout_forward``) the rollout
        keeps its graph: that one update's forward pass is the sampling pass."""
        prompts = self.next_prompts(n_prompts)
        grad = self.config.reuse_rollout_forward and self.updates_per_step() == 1
        batch = self.sample_completions([p for p in prompts for _ in range(group_size)], grad)
        batch.group_size = group_size
        return batch

    def group_rollout(self) -> Batch:
        """Step 1 of the group trainers (GRPO, REINFORCE/RLOO): ``group_size`` completions
        of each of ``prompts_per_step`` new prompts (:meth:`sample_groups`), or with
        ``dynamic_sampling`` only groups whose rewards differ
        (:meth:`sample_informative_groups`)."""
        cfg = self.config
        if cfg.dynamic_sampling:  # DAPO: only groups with a gradient
            return self.sample_informative_groups(cfg.prompts_per_step, cfg.group_size,
                                                  cfg.max_sampling_rounds)
        return self.sample_groups(cfg.prompts_per_step, cfg.group_size)

    def sample_informative_groups(self, n_prompts: int, group_size: int,
                                  max_rounds: int) -> Batch:
        """DAPO's dynamic sampling (Yu et al. 2025, arXiv:2503.14476, Sec. 3.2: Eq. 11's
        constraint ``0 < |{o_i correct}| < G``, Algorithm 1's buffer): rounds of
        :meth:`sample_groups` for ``n_prompts`` new prompts, each round scored
        (:meth:`score`); the groups whose rewards are not all equal are kept, until
        ``n_prompts`` are kept or ``max_rounds`` rounds ran. Returns the kept groups, in
        the order sampled (the last round's whole batch if none was kept, so the step
        still has its data). Every sampled completion counts in ``samples_used``."""
        kept, n_kept, rounds = [], 0, 0
        while n_kept < n_prompts and rounds < max_rounds:
            rounds += 1
            batch = self.sample_groups(n_prompts, group_size)
            self.score(batch)
            informative = ~equal_reward_groups(batch.rewards, group_size)  # (n_prompts,)
            groups = informative.nonzero().squeeze(1)[:n_prompts - n_kept]  # (k,)
            if len(groups):
                rows = (groups[:, None] * group_size + torch.arange(group_size)).reshape(-1)
                kept.append(batch.rows(rows))  # (k * G) rows, group by group
                n_kept += len(groups)
        out = Batch.cat(kept) if kept else batch
        out.sampling_rounds = rounds
        return out

    def policy_logprobs(self, batch: Batch) -> torch.Tensor:
        """Log-probs (B, N) of the batch's completions under the current policy, with
        gradient: the rollout's own (taken out of the batch, so only the first update after
        an on-policy rollout uses them) if it kept them, else a new forward pass."""
        if batch.logprobs is not None:
            logprobs, batch.logprobs = batch.logprobs, None
            return logprobs
        cfg = self.config
        return completion_logprobs(self.policy, batch.prompt_ids, batch.tokens, batch.mask,
                                   temperature=cfg.temperature, top_k=cfg.top_k)  # (B, N)

    def reference_logprobs(self, batch: Batch) -> torch.Tensor | None:
        """log pi_ref (B, N) of the batch's completions under the frozen reference, no
        gradient (None without a reference). At the sampling temperature but without top-k:
        a token the policy samples may lie outside the reference's k most likely ones, whose
        log-prob would be -inf."""
        if self.reference is None:
            return None
        with torch.no_grad():
            return completion_logprobs(self.reference, batch.prompt_ids, batch.tokens,
                                       batch.mask, temperature=self.config.temperature)

    def reference_kl(self, batch: Batch) -> torch.Tensor:
        """k1 = log pi_old - log pi_ref per token (B, N), 0 on padding and without a
        reference: the KL penalty that PPO and REINFORCE fold into the reward (InstructGPT,
        Ouyang et al. 2022, Eq. 2). Its mean over real tokens is logged as ``kl_ref_k1``."""
        if batch.ref_logprobs is None:
            return torch.zeros_like(batch.mask)
        return (batch.old_logprobs - batch.ref_logprobs) * batch.mask  # (B, N)

    def rollout(self) -> Batch:
        raise NotImplementedError

    def score(self, batch: Batch) -> None:
        """The verifier: ``batch.rewards`` (B,) and ``batch.correct`` (B,) from the task,
        and each prompt's share correct (:attr:`success`, prioritized sampling); then
        ``batch.ref_logprobs`` (:meth:`reference_logprobs`, None without a reference). A
        batch the rollout already scored (dynamic sampling) is left as it is."""
        if batch.rewards is not None:
            return
        batch.rewards = self.task.rewards(batch.prompts, batch.texts)  # (B,)
        batch.correct = torch.tensor([self.task.is_correct(p, t)
                                      for p, t in zip(batch.prompts, batch.texts, strict=True)])
        if self.prioritized:
            rows = torch.tensor([self.prompt_index[p] for p in batch.prompts])  # (B,)
            hits = torch.zeros(len(self.success)).index_add_(0, rows, batch.correct.float())
            seen = torch.zeros(len(self.success)).index_add_(0, rows, torch.ones(len(rows)))
            self.success[seen > 0] = hits[seen > 0] / seen[seen > 0]
        batch.ref_logprobs = self.reference_logprobs(batch)  # (B, N) or None

    def compute_targets(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one minibatch and its metrics (``"loss"``: the policy's part)."""
        raise NotImplementedError

    #: Draw a new permutation of the batch every pass, also with one minibatch (PPO, as
    #: OpenAI's lm-human-preferences does); else the batch is split only when M > 1.
    shuffle_every_pass = False

    def minibatches(self, batch: Batch):
        """What each optimiser step of :meth:`update` trains on: ``mu`` passes over the
        batch (:class:`ClipConfig`, else one), each the whole batch or a new random split
        into ``minibatches`` parts."""
        cfg = self.config
        mu, parts = (cfg.mu, cfg.minibatches) if isinstance(cfg, ClipConfig) else (1, 1)
        for _ in range(mu):
            if parts == 1 and not self.shuffle_every_pass:
                yield batch
                continue
            perm = torch.randperm(len(batch), generator=self.generator)  # (B,)
            yield from (batch.rows(idx) for idx in perm.chunk(parts))

    def optimizer_step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward; for each optimiser, clip its parameters' gradient norm to
        ``grad_clip`` and step; then the learning-rate schedule. Returns the norms before
        clipping, keyed as in :attr:`optimizers`."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss.backward()
        norms = {}
        for key, opt in self.optimizers.items():
            params = [p for group in opt.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip or float("inf"))
            norms[key] = float(norm)
            opt.step()
        self.scheduler.step()
        return norms

    def update(self, batch: Batch) -> dict[str, float]:
        """4.-5. One :meth:`optimizer_step` on the :meth:`loss` of each of
        :meth:`minibatches`; returns their metrics averaged over those steps."""
        records = []
        for minibatch in self.minibatches(batch):
            loss, metrics = self.loss(minibatch)
            records.append({**metrics, **self.optimizer_step(loss)})
        return mean_over_steps(records)

    # ------------------------------------------------------------------- loop -----
    def step(self) -> dict[str, float]:
        """One iteration of the skeleton; returns the logged metrics of this step."""
        t = time.perf_counter()
        batch = self.rollout()                    # 1. sample
        self.score(batch)                         # 2. score
        metrics = self.compute_targets(batch)     # 3. advantages / targets
        metrics.update(self.update(batch))        # 4.-5. loss and update
        self.step_count += 1
        return self.log(batch, metrics, time.perf_counter() - t)  # 6. log

    def rollout_metrics(self, batch: Batch) -> dict[str, float]:
        """Reward, length and entropy of the step's completions (the trained batch); the
        degenerate groups (grouped rollouts), ``sampling_rounds`` (dynamic sampling),
        ``train_unsolved`` (prioritized sampling), ``kl_ref_k1`` (with a reference),
        ``step_by_step_frac`` (the R1 task)."""
        out = {"reward_mean": float(batch.rewards.mean()),
               "response_len": float(batch.mask.sum(-1).mean()),
               "entropy": float(masked_mean(batch.entropy, batch.mask))}
        if batch.group_size is not None:
            out.update(group_metrics(batch.rewards, batch.correct, batch.group_size))
        if batch.sampling_rounds is not None:
            out["sampling_rounds"] = float(batch.sampling_rounds)
        if self.prioritized:
            seen = self.success[~self.success.isnan()]
            out["train_unsolved"] = float((seen == 0).float().mean())
        if batch.ref_logprobs is not None:
            out["kl_ref_k1"] = float(self.reference_kl(batch).sum() / batch.mask.sum())
        if hasattr(self.task, "is_step_by_step"):  # the R1 task
            steps = [self.task.is_step_by_step(t) for t in batch.texts]
            out["step_by_step_frac"] = sum(steps) / len(steps)
        return out

    def log(self, batch: Batch, metrics: dict[str, float], seconds: float) -> dict[str, float]:
        """Append this step's entry to :attr:`history` and return it."""
        entry = {"step": self.step_count, "samples": self.samples_used, "wall": self.clock(),
                 "step_seconds": seconds, **self.rollout_metrics(batch), **metrics}
        for k, v in entry.items():
            self.history[k].append(v)
        return entry

    def clock(self) -> float:
        """Seconds of training since :meth:`train` started, evaluations excluded (0 outside
        of train())."""
        if self._t0 is None:
            return 0.0
        return time.perf_counter() - self._t0 - self._eval_seconds

    def run_eval(self) -> float:
        """Evaluate the policy now and append the ``eval_*`` entries; returns the accuracy."""
        t = time.perf_counter()
        acc = evaluate(self.policy, self.task, split=self.config.eval_split)
        seconds = time.perf_counter() - t
        for key, value in (("eval_step", self.step_count), ("eval_samples", self.samples_used),
                           ("eval_accuracy", acc), ("eval_wall", self.clock()),
                           ("eval_seconds", seconds)):
            self.history[key].append(value)
        self._eval_seconds += seconds
        return acc

    def train(self, progress: bool = True) -> dict[str, list]:
        """Run ``config.steps`` steps (or until ``stop_at_accuracy``); returns the history."""
        from tqdm.auto import tqdm

        cfg = self.config
        self._t0, self._eval_seconds = time.perf_counter(), 0.0
        if not self.history.get("eval_step"):
            acc = self.run_eval()
        else:
            acc = self.history["eval_accuracy"][-1]
        bar = tqdm(total=cfg.steps, desc=type(self).__name__, disable=not progress, leave=False)
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

"""DPO trainer: offline, on preference pairs built from the warm model's own samples.

Chapter: "DPO" (and "Comparing PPO, GRPO, REINFORCE and DPO"). Rafailov et al. 2023:

1. rollout (the pairs once, at the start of training): for ``pair_prompts`` training
   prompts, sample ``pair_samples`` completions each from the starting policy; the
   verifier labels them; every prompt with at least one correct and one wrong completion
   gives up to ``pairs_per_prompt`` pairs (chosen = correct, rejected = wrong). The frozen
   reference is the starting policy: its sequence log-probs of every pair are computed
   once here and stored, so no reference model stays in memory. Every step then draws a
   minibatch of ``batch_size`` pairs (passes over the shuffled pairs);
2. score: done by the verifier when the pairs were built (no online reward);
3. targets: none, the preference is the target;
4.-5. one optimiser step on ``dpo_loss`` of the sequence log-probs (sum over each
   completion's tokens);
6. log: the keys of :data:`course_lib.trainers.metrics.METRICS`. All pair-building samples
   count in ``samples`` from the first step on, and their sampling time in ``wall``.

Models held: the policy only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Annotated, Literal

import torch

from course_lib._checks import Positive, PositiveInt, at_least
from course_lib.dpo import DPO_LOSS_TYPES, dpo_loss
from course_lib.model import completion_logprobs, sample
from course_lib.tasks import PAD_ID
from course_lib.trainers.base import Trainer, TrainerConfig

__all__ = ["DPOConfig", "DPOTrainer", "PreferenceBatch", "build_preference_pairs"]


@dataclass
class DPOConfig(TrainerConfig):
    """DPO settings: pairs from all 2000 training prompts x 8 samples (16 000 samples, the
    budget of 125 GRPO steps); beta and lr tuned on the running example
    (``benchmarks/bench_training.py``)."""

    beta: Positive = 0.5
    """Strength of the implicit KL to the reference (the DPO paper's default: 0.1)."""
    loss_type: Literal[DPO_LOSS_TYPES] = "sigmoid"
    """sigmoid (DPO), ipo, hinge or robust (see course_lib.dpo_loss)."""
    label_smoothing: float = 0.0
    """Assumed label noise (conservative / robust DPO)."""
    batch_size: PositiveInt = 64
    """Preference pairs per step."""
    pair_prompts: PositiveInt | None = None
    """Training prompts used to build pairs (None: all)."""
    pair_samples: Annotated[int, at_least(2, "a right and a wrong one")] = 8
    """Completions sampled per prompt to build pairs."""
    pairs_per_prompt: PositiveInt = 1
    """At most this many (chosen, rejected) pairs per prompt."""
    lr: float = 3e-5


@dataclass
class PreferenceBatch:
    """A minibatch of M preference pairs with their precomputed reference log-probs."""

    prompt_ids: torch.Tensor
    """(M, P) prompt token ids."""
    chosen: torch.Tensor
    """(M, Nc) chosen completion ids, right-padded."""
    chosen_mask: torch.Tensor
    """(M, Nc) 1 on its real tokens."""
    rejected: torch.Tensor
    """(M, Nr) rejected completion ids, right-padded."""
    rejected_mask: torch.Tensor
    """(M, Nr) 1 on its real tokens."""
    ref_chosen_logps: torch.Tensor
    """(M,) log pi_ref of each chosen completion (sum over its tokens)."""
    ref_rejected_logps: torch.Tensor
    """(M,) the same for the rejected one."""


def _pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of 1-D token tensors -> right-padded (M, N) ids and (M, N) float mask."""
    N = max(len(r) for r in rows)
    ids = torch.full((len(rows), N), PAD_ID, dtype=torch.long)
    mask = torch.zeros(len(rows), N)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1.0
    return ids, mask


@torch.no_grad()
def build_preference_pairs(policy, task, prompts: list[str], samples_per_prompt: int,
                           pairs_per_prompt: PositiveInt = 1, temperature: float = 1.0,
                           top_k: int | None = None, max_new_tokens: int | None = None,
                           generator: torch.Generator | None = None, seed: int = 0,
                           chunk: int = 1024) -> dict:
    """Sample, verify and pair the policy's own completions (chosen correct, rejected wrong).

    Returns a dict with ``prompts`` (list of M str), ``prompt_ids`` (M, P), ``chosen`` and
    ``rejected`` (M, N) ids with masks ``chosen_mask``/``rejected_mask``, and
    ``n_samples``, the number of completions sampled.
    """
    rng = random.Random(seed)
    n_new = max_new_tokens or task.max_new_tokens
    flat = [p for p in prompts for _ in range(samples_per_prompt)]
    texts, rows = [], []
    for i in range(0, len(flat), chunk):
        part = flat[i:i + chunk]
        out = sample(policy, task.encode_prompts(part), n_new, temperature=temperature,
                     top_k=top_k, generator=generator)
        for tok, m in zip(out.tokens, out.mask, strict=True):
            rows.append(tok[:int(m.sum())].clone())
            texts.append(task.decode(tok))
    P, C, R = [], [], []
    for j, p in enumerate(prompts):
        idx = range(j * samples_per_prompt, (j + 1) * samples_per_prompt)
        good = [i for i in idx if task.is_correct(p, texts[i])]
        bad = [i for i in idx if not task.is_correct(p, texts[i])]
        rng.shuffle(good)
        rng.shuffle(bad)
        for c, r in list(zip(good, bad, strict=False))[:pairs_per_prompt]:
            P.append(p)
            C.append(rows[c])
            R.append(rows[r])
    if not P:
        raise ValueError("no preference pair could be built: the policy never produced both "
                         "a correct and a wrong completion for one prompt")
    chosen, chosen_mask = _pad(C)
    rejected, rejected_mask = _pad(R)
    return {"prompts": P, "prompt_ids": task.encode_prompts(P), "chosen": chosen,
            "chosen_mask": chosen_mask, "rejected": rejected, "rejected_mask": rejected_mask,
            "n_samples": len(flat)}


class DPOTrainer(Trainer):
    """Offline DPO with precomputed reference log-probs. See the module docstring."""

    config_cls = DPOConfig
    name = "dpo"

    def __init__(self, policy, task, config: DPOConfig | None = None):
        super().__init__(policy, task, config)
        self.pairs: dict | None = None
        self._pair_order: list[int] = []

    def _sequence_logps(self, model, prompt_ids, chosen, chosen_mask, rejected, rejected_mask):
        """Sequence log-probs (M,) of chosen and rejected, in one forward pass of 2M rows."""
        N = max(chosen.shape[1], rejected.shape[1])
        pad = lambda x, v: torch.nn.functional.pad(x, (0, N - x.shape[1]), value=v)  # noqa: E731
        ids = torch.cat([pad(chosen, PAD_ID), pad(rejected, PAD_ID)])  # (2M, N)
        mask = torch.cat([pad(chosen_mask, 0.0), pad(rejected_mask, 0.0)])  # (2M, N)
        lp = completion_logprobs(model, prompt_ids.repeat(2, 1), ids, mask,
                                 temperature=self.config.temperature,
                                 top_k=self.config.top_k)  # (2M, N)
        seq = lp.sum(-1)  # (2M,)
        M = prompt_ids.shape[0]
        return seq[:M], seq[M:]

    def build_pairs(self) -> dict:
        """Step 1, done once: pairs from the starting policy and the reference log-probs."""
        cfg = self.config
        prompts = list(self.task.train)
        self.rng.shuffle(prompts)
        if cfg.pair_prompts is not None:
            prompts = prompts[:cfg.pair_prompts]
        pairs = build_preference_pairs(
            self.policy, self.task, prompts, cfg.pair_samples, cfg.pairs_per_prompt,
            temperature=cfg.temperature, top_k=cfg.top_k, max_new_tokens=self.max_new_tokens,
            generator=self.generator, seed=cfg.seed)
        with torch.no_grad():  # the frozen reference = the starting policy, precomputed
            ref_c, ref_r = self._sequence_logps(
                self.policy, pairs["prompt_ids"], pairs["chosen"], pairs["chosen_mask"],
                pairs["rejected"], pairs["rejected_mask"])
        pairs["ref_chosen_logps"], pairs["ref_rejected_logps"] = ref_c, ref_r
        self.samples_used += pairs["n_samples"]
        self.pairs = pairs
        return pairs

    def rollout(self) -> PreferenceBatch:
        if self.pairs is None:
            self.build_pairs()
        n = len(self.pairs["prompts"])
        idx = []
        while len(idx) < min(self.config.batch_size, n):
            if not self._pair_order:
                self._pair_order = list(range(n))
                self.rng.shuffle(self._pair_order)
            idx.append(self._pair_order.pop())
        t = torch.tensor(idx)
        rows = {k: v[t] for k, v in self.pairs.items() if isinstance(v, torch.Tensor)}
        for k in ("chosen", "rejected"):  # drop all-padding columns of this minibatch
            n_tok = int(rows[k + "_mask"].sum(-1).max())
            rows[k], rows[k + "_mask"] = rows[k][:, :n_tok], rows[k + "_mask"][:, :n_tok]
        return PreferenceBatch(**rows)

    def score(self, batch: PreferenceBatch) -> None:
        """Nothing to do: the pairs were labelled by the verifier when they were built."""

    def compute_targets(self, batch: PreferenceBatch) -> dict[str, float]:
        """Nothing to do: the preference itself is the target."""
        return {}

    def loss(self, batch: PreferenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        pc, pr = self._sequence_logps(self.policy, batch.prompt_ids, batch.chosen,
                                      batch.chosen_mask, batch.rejected, batch.rejected_mask)
        loss, stats = dpo_loss(pc, pr, batch.ref_chosen_logps, batch.ref_rejected_logps,
                               beta=cfg.beta, loss_type=cfg.loss_type,
                               label_smoothing=cfg.label_smoothing)
        return loss, {"loss": float(loss.detach()), "n_pairs": len(self.pairs["prompts"]),
                      **stats}

    def rollout_metrics(self, batch: PreferenceBatch) -> dict[str, float]:
        """Nothing sampled during training: no rollout metrics."""
        return {}

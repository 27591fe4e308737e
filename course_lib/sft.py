"""Supervised warm start (SFT): a weak-but-not-hopeless policy to start RL from, cached on disk.

Chapter: "A tiny language model and a verifiable task" (why RL needs a warm start: a
policy that never samples a correct answer gets all-zero rewards, so every GRPO group is
degenerate and there is no gradient).

:func:`supervised_finetune` minimises the cross-entropy of the task's target completions
(prompt tokens are not trained on) and stops as soon as greedy accuracy on a fixed subset
of *training* prompts reaches ``target_accuracy`` (about 30% by default), so the held-out
accuracy the RL chapters start from is about 30% too (the held-out split is never used to
decide anything). :func:`warm_start` builds a :class:`~course_lib.model.TinyGPT`, trains it
and caches the weights in ``$COURSE_LIB_CACHE`` (default ``~/.cache/course_lib``); the file
is written to a temporary name and moved into place with ``os.replace`` (atomic), so two
processes building it at once (pytest-xdist) never read a half-written file. Training is
deterministic, so a cache hit and a fresh build give the identical model.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.evaluate import evaluate
from course_lib.model import ModelConfig, TinyGPT, forward_logits
from course_lib.tasks import PAD_ID

__all__ = ["SFTConfig", "supervised_finetune", "warm_start", "cache_dir"]

_CACHE_VERSION = 1


@dataclass
class SFTConfig:
    """Settings of the supervised warm start."""

    lr: float = 3e-3
    """AdamW learning rate."""
    batch_size: int = 64
    """Training examples per step (drawn with replacement from the training prompts)."""
    max_steps: int = 3000
    """Upper bound on SFT steps (reached only if the target accuracy is never met)."""
    target_accuracy: float = 0.3
    """Stop once greedy accuracy on the check prompts reaches this (None: run max_steps)."""
    check_every: int = 10
    """Steps between two accuracy checks."""
    n_check: int = 500
    """Number of *training* prompts used for the stopping check (never held-out ones)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"SFTConfig.lr must be > 0, got {self.lr}")
        for name in ("batch_size", "max_steps", "check_every", "n_check"):
            if getattr(self, name) < 1:
                raise ValueError(f"SFTConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1] or None, got "
                             f"{self.target_accuracy}")


def _sft_batch(task, prompts: list[str], rng: random.Random):
    """Prompts + target completions -> ids (B, P + N) and a loss mask (B, N) on completions."""
    targets = [task.sft_completion(p, rng) for p in prompts]
    N = max(len(t) for t in targets)
    comp = torch.full((len(prompts), N), PAD_ID, dtype=torch.long)  # (B, N)
    mask = torch.zeros(len(prompts), N)  # (B, N)
    for i, t in enumerate(targets):
        comp[i, :len(t)] = task.encode(t)
        mask[i, :len(t)] = 1.0
    return torch.cat([task.encode_prompts(prompts), comp], dim=1), mask


def supervised_finetune(model: nn.Module, task, config: SFTConfig | None = None,
                        seed: int = 0) -> dict:
    """Train ``model`` in place on the task's target completions; returns a summary dict.

    Loss: mean cross-entropy over completion tokens (EOS included) of a batch. Works with
    any model :func:`~course_lib.model.forward_logits` accepts. The summary has ``steps``
    and ``check_accuracy`` (greedy accuracy on the first ``n_check`` training prompts).
    """
    cfg = config or SFTConfig()
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    P = task.prompt_len
    acc, step = 0.0, 0
    model.train()
    for step in range(1, cfg.max_steps + 1):
        prompts = [rng.choice(task.train) for _ in range(cfg.batch_size)]
        ids, mask = _sft_batch(task, prompts, rng)  # (B, P + N), (B, N)
        logits = forward_logits(model, ids[:, :-1])[:, P - 1:, :]  # (B, N, V)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, P:].reshape(-1),
                             reduction="none").view_as(mask)  # (B, N)
        loss = (ce * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.target_accuracy is not None and step % cfg.check_every == 0:
            acc = evaluate(model, task, split="train", limit=cfg.n_check)
            if acc >= cfg.target_accuracy:
                break
    model.eval()
    return {"steps": step, "check_accuracy": acc}


def cache_dir() -> Path:
    """Folder of cached warm starts: ``$COURSE_LIB_CACHE`` or ``~/.cache/course_lib``."""
    env = os.environ.get("COURSE_LIB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "course_lib"


def _cache_path(task, model_config: ModelConfig, sft: SFTConfig, seed: int) -> Path:
    key = json.dumps({"task": task.cache_key(), "model": asdict(model_config),
                      "sft": asdict(sft), "seed": seed, "v": _CACHE_VERSION,
                      "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_dir() / f"warm_{task.cache_key()}_seed{seed}_{digest}.pt"


def warm_start(task, seed: int = 0, model_config: ModelConfig | None = None,
               sft_config: SFTConfig | None = None, use_cache: bool = True) -> TinyGPT:
    """A TinyGPT after a short SFT on ``task`` (greedy accuracy about ``target_accuracy``).

    The same ``(task, seed, model_config, sft_config)`` always gives the same weights,
    whether trained now or loaded from the cache. The returned model is in eval mode and
    carries ``model.warm_start_info`` (SFT steps, check accuracy, cache path, cache hit).
    Default size: :class:`~course_lib.model.ModelConfig` with ``block_size`` large enough for
    the task.
    """
    mcfg = model_config or ModelConfig(block_size=max(32, task.prompt_len + task.max_new_tokens))
    scfg = sft_config or SFTConfig()
    if task.prompt_len + task.max_new_tokens > mcfg.block_size:
        raise ValueError(f"block_size {mcfg.block_size} < prompt length {task.prompt_len} + "
                         f"max_new_tokens {task.max_new_tokens}")
    path = _cache_path(task, mcfg, scfg, seed)
    model = TinyGPT(mcfg, seed=seed)
    if use_cache and path.exists():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["state_dict"])
        info = dict(blob["info"], cache_hit=True)
    else:
        # One intra-op thread: float sums then run in one order on every machine, so a
        # fresh build equals the cached file (with 2 threads it does not, and is slower).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            info = supervised_finetune(model, task, scfg, seed=seed)
        finally:
            torch.set_num_threads(threads)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            os.close(fd)
            try:
                torch.save({"state_dict": model.state_dict(), "info": info}, tmp)
                os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        info = dict(info, cache_hit=False)
    model.eval()
    model.warm_start_info = dict(info, cache_path=str(path))
    return model

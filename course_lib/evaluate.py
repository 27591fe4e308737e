"""Held-out evaluation: greedy accuracy of a policy on a task split.

Chapter: "A tiny language model and a verifiable task" (how we measure). Used by the
supervised warm start (its stopping check), by every trainer's log, by the TRL callback and
by the comparison chapter; it needs only a policy and a task, no trainer.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from course_lib.model import sample

__all__ = ["evaluate", "greedy_completions"]


@torch.no_grad()
def greedy_completions(policy: nn.Module, task, prompts: list[str],
                       batch_size: int | None = None) -> list[str]:
    """Greedy (argmax) completions of ``prompts`` as text, each cut after its first EOS.

    All prompts are decoded in one batch by default (500 held-out prompts of the running
    example: 3 forward passes of a (500, <= 9) batch), or in chunks of ``batch_size``.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts to evaluate")
    bs = len(prompts) if batch_size is None else batch_size
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts: list[str] = []
    for i in range(0, len(prompts), bs):
        chunk = prompts[i:i + bs]
        out = sample(policy, task.encode_prompts(chunk), task.max_new_tokens, greedy=True)
        texts.extend(task.decode(row) for row in out.tokens)
    return texts


def evaluate(policy: nn.Module, task, split: str = "test", batch_size: int | None = None,
             limit: int | None = None) -> float:
    """Greedy accuracy in [0, 1] of ``policy`` on ``task``'s ``split`` ("test" = held-out).

    A prompt counts as solved iff the greedy completion's final answer is exactly right
    (``task.is_correct``; any format reward is ignored). ``limit`` evaluates only the first
    ``limit`` prompts of the split.
    """
    prompts = task.split(split)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        prompts = prompts[:limit]
    texts = greedy_completions(policy, task, prompts, batch_size=batch_size)
    correct = sum(task.is_correct(p, t) for p, t in zip(prompts, texts, strict=True))
    return correct / len(prompts)

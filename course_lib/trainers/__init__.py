"""Trainers (GRPO, PPO, REINFORCE/RLOO, DPO) sharing one skeleton.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". See :mod:`course_lib.trainers.base` for
the skeleton (sample -> score -> targets -> loss -> update -> log) and
:mod:`course_lib.trainers.metrics` for what each history key means.

The names below are loaded on first use, so ``import course_lib.trainers.grpo`` (or
``from course_lib.trainers import GRPOTrainer``) loads GRPO's module and not the others.

Example::

    task = AdditionTask(seed=0)
    trainer = GRPOTrainer(warm_start(task, seed=0), task, GRPOConfig(steps=200, seed=0))
    history = trainer.train()  # keys: course_lib.trainers.metrics.METRICS
"""

from __future__ import annotations

import importlib

#: exported name -> module that defines it
_EXPORTS = {
    "Trainer": "course_lib.trainers.base",
    "TrainerConfig": "course_lib.trainers.base",
    "GRPOConfig": "course_lib.trainers.grpo",
    "GRPOTrainer": "course_lib.trainers.grpo",
    "PPOConfig": "course_lib.trainers.ppo",
    "PPOTrainer": "course_lib.trainers.ppo",
    "ReinforceConfig": "course_lib.trainers.reinforce",
    "ReinforceTrainer": "course_lib.trainers.reinforce",
    "DPOConfig": "course_lib.trainers.dpo",
    "DPOTrainer": "course_lib.trainers.dpo",
    "evaluate": "course_lib.evaluate",
}
#: CLI / benchmark name -> (trainer class name, config class name)
_TRAINERS = {
    "grpo": ("GRPOTrainer", "GRPOConfig"),
    "ppo": ("PPOTrainer", "PPOConfig"),
    "reinforce": ("ReinforceTrainer", "ReinforceConfig"),
    "dpo": ("DPOTrainer", "DPOConfig"),
}

__all__ = [*_EXPORTS, "TRAINERS"]


def __getattr__(name: str):
    if name == "TRAINERS":  # name -> (trainer class, config class); loads all four
        return {k: (__getattr__(t), __getattr__(c)) for k, (t, c) in _TRAINERS.items()}
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

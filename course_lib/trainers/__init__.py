"""Trainers (GRPO, PPO, REINFORCE/RLOO, DPO) sharing one skeleton, and held-out evaluation.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". See :mod:`course_lib.trainers.base` for
the skeleton (sample -> score -> targets -> loss -> update -> log).
"""

from course_lib.trainers.base import Trainer, TrainerConfig
from course_lib.trainers.dpo import DPOConfig, DPOTrainer
from course_lib.trainers.evaluate import evaluate
from course_lib.trainers.grpo import GRPOConfig, GRPOTrainer
from course_lib.trainers.ppo import PPOConfig, PPOTrainer
from course_lib.trainers.reinforce import ReinforceConfig, ReinforceTrainer

#: CLI / benchmark name -> (trainer class, config class)
TRAINERS = {
    "grpo": (GRPOTrainer, GRPOConfig),
    "ppo": (PPOTrainer, PPOConfig),
    "reinforce": (ReinforceTrainer, ReinforceConfig),
    "dpo": (DPOTrainer, DPOConfig),
}

__all__ = ["Trainer", "TrainerConfig", "GRPOConfig", "GRPOTrainer", "PPOConfig", "PPOTrainer",
           "ReinforceConfig", "ReinforceTrainer", "DPOConfig", "DPOTrainer", "evaluate",
           "TRAINERS"]

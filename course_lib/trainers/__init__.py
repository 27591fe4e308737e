"""Trainers (GRPO, PPO, REINFORCE/RLOO, DPO) sharing one skeleton, and held-out evaluation."""

from course_lib.trainers.evaluate import evaluate

__all__ = ["evaluate"]

"""course_lib: the tested implementation behind the course on RL for LLM post-training.

The algorithm functions are importable from here; the training side lives in its
modules (``course_lib.bandit``, ``course_lib.tasks``, ``course_lib.model``,
``course_lib.sft``, ``course_lib.trainers``), see CONTRIBUTING.md.
"""

from course_lib.dpo import dpo_loss
from course_lib.grpo import compute_group_advantages, grpo_loss
from course_lib.kl import kl_estimate
from course_lib.ppo import gae, kl_shaped_rewards, ppo_policy_loss, value_loss, whiten
from course_lib.reinforce import baseline_advantages

__all__ = [
    "baseline_advantages",
    "compute_group_advantages",
    "dpo_loss",
    "gae",
    "grpo_loss",
    "kl_estimate",
    "kl_shaped_rewards",
    "ppo_policy_loss",
    "value_loss",
    "whiten",
]
__version__ = "0.1.0"

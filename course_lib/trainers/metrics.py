"""What every key of ``trainer.history`` means: one table, one meaning per key.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO". Every trainer appends one value per
step to each of its per-step keys, and one value per evaluation to each ``eval_*`` key.
A key that two trainers log means the same quantity in both; two quantities that differ
(the k3 KL in GRPO's loss, the k1 KL in PPO's reward) have different keys. Averages "over
the step's optimiser steps" are plain means over the ``updates_per_step()`` optimiser
steps of that training step (GRPO, PPO: ``mu`` x ``minibatches``; else 1).
``tests/test_metrics.py`` checks that every trainer logs only keys of :data:`METRICS`.

Notation: rho = pi_theta / pi_old per token (pi_old: the policy that sampled the batch),
"real tokens": completion tokens up to and including the first EOS (``batch.mask``).
"""

from __future__ import annotations

import torch

from course_lib.kl import kl_estimate
from course_lib.surrogate import masked_mean

__all__ = ["METRICS", "TIMINGS", "mean_over_steps", "equal_reward_groups", "group_metrics",
           "surrogate_metrics"]

#: history key -> (trainers that log it, what it is)
METRICS: dict[str, tuple[str, str]] = {
    # -- every trainer, every step
    "step": ("all", "training steps done so far (1, 2, ...)"),
    "samples": ("all", "completions sampled so far (DPO: all of its pair-building samples "
                       "from step 1 on)"),
    "wall": ("all", "seconds of training since train() started, at the end of the step; "
                    "evaluation time excluded"),
    "step_seconds": ("all", "seconds this step took: sampling, scoring, targets, updates"),
    "loss": ("all", "the policy's loss, whose gradient updates the policy, averaged over the "
                    "step's optimiser steps: GRPO grpo_loss (surrogate + beta k3); PPO the "
                    "clipped surrogate (the critic's is value_loss); REINFORCE -A log pi; "
                    "DPO dpo_loss"),
    "grad_norm": ("all", "L2 norm of the policy's whole gradient before clipping to "
                         "grad_clip, averaged over the step's optimiser steps"),
    # -- online trainers (GRPO, PPO, REINFORCE/RLOO): the rollout
    "reward_mean": ("online", "mean verifier reward of the step's completions"),
    "response_len": ("online", "mean number of real tokens per completion (EOS included)"),
    "entropy": ("online", "mean over real tokens of the entropy (nats) of the sampling "
                          "distribution (temperature and top-k applied) the token was drawn "
                          "from; measured while sampling, no extra forward pass"),
    "step_by_step_frac": ("online, MultiStepSumTask", "share of completions that write the "
                                                      "intermediate sums (the R1 task)"),
    # -- group trainers (GRPO, REINFORCE/RLOO): the G completions of one prompt
    "degenerate_frac": ("GRPO, REINFORCE", "share of groups whose G verifier rewards are all "
                                           "equal: with a group baseline their advantages are "
                                           "0 (no policy gradient); = degenerate_all_wrong + "
                                           "degenerate_all_right"),
    "degenerate_all_wrong": ("GRPO, REINFORCE", "share of groups with equal rewards and no "
                                                "correct completion (the prompt is too hard)"),
    "degenerate_all_right": ("GRPO, REINFORCE", "share of groups with equal rewards and only "
                                                "correct completions (the prompt is solved)"),
    "sampling_rounds": ("GRPO, REINFORCE with dynamic_sampling", "rounds of sampling the "
                        "step took to keep prompts_per_step groups whose rewards differ (at most "
                        "max_sampling_rounds); each round samples prompts_per_step groups"),
    "train_unsolved": ("online, prompt_sampling prioritized", "share of the training prompts "
                       "sampled so far whose last rollout had no correct completion: what "
                       "prioritized sampling weights up"),
    "adv_std": ("GRPO, REINFORCE", "unbiased std of the step's advantages (one per "
                                   "completion)"),
    # -- clipped surrogate (GRPO, PPO)
    "clip_frac": ("GRPO, PPO", "share of real tokens where the clipped term of the surrogate "
                               "is the one used (its gradient is 0), averaged over the step's "
                               "optimiser steps; 0 while rho = 1 (mu = 1)"),
    "approx_kl": ("GRPO, PPO", "KL(pi_old || pi_theta) by k3: mean over real tokens of "
                               "(rho - 1) - log rho, before each optimiser step, averaged over "
                               "them; how far the updates moved the policy from the one that "
                               "sampled the batch (0 with one update per batch)"),
    # -- KL to the frozen reference (only when the trainer holds one)
    "kl_ref": ("GRPO with beta > 0", "KL(pi_theta || pi_ref) by k3 = pi_ref/pi_theta - "
                                     "log(pi_ref/pi_theta) - 1, mean over real tokens: the "
                                     "KL term of the loss (DeepSeekMath Eq. 4), averaged over "
                                     "the step's optimiser steps"),
    "kl_ref_k1": ("online, with a reference", "KL(pi_old || pi_ref) by k1 = log pi_old - "
                                              "log pi_ref, mean over real tokens at sampling "
                                              "time: the penalty PPO and REINFORCE fold into "
                                              "the reward (InstructGPT Eq. 2); GRPO logs it "
                                              "beside its loss's k3 (kl_ref)"),
    # -- PPO's critic
    "value_loss": ("PPO", "the critic's clipped value loss, averaged over the step's "
                          "optimiser steps"),
    "value_clip_frac": ("PPO", "share of real tokens where the clipped value term is the one "
                               "used, averaged over the step's optimiser steps"),
    "value_grad_norm": ("PPO", "L2 norm of the critic's gradient before clipping to "
                               "grad_clip, averaged over the step's optimiser steps"),
    # -- DPO (the statistics of course_lib.dpo_loss on the step's pairs)
    "n_pairs": ("DPO", "preference pairs built at the start (the training set)"),
    "chosen_rewards": ("DPO", "mean implicit reward beta log(pi/pi_ref) of the chosen "
                              "completions"),
    "rejected_rewards": ("DPO", "mean implicit reward of the rejected completions"),
    "reward_accuracy": ("DPO", "share of pairs whose chosen implicit reward is the larger"),
    "reward_margin": ("DPO", "mean of chosen minus rejected implicit reward"),
    # -- evaluation: one entry before training and every eval_every steps
    "eval_step": ("all", "steps done when the evaluation ran (0: the starting policy)"),
    "eval_samples": ("all", "completions sampled by then (as samples)"),
    "eval_accuracy": ("all", "greedy accuracy on the eval_split prompts "
                             "(course_lib.evaluate.evaluate)"),
    "eval_wall": ("all", "seconds of training by then, evaluation time excluded (as wall)"),
    "eval_seconds": ("all", "seconds this evaluation took"),
}

#: The keys that measure time (they differ between two runs with the same seed).
TIMINGS = ("wall", "step_seconds", "eval_wall", "eval_seconds")


def mean_over_steps(records: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean of the metrics of a training step's optimiser steps (all same keys)."""
    return {k: sum(r[k] for r in records) / len(records) for k in records[0]}


def equal_reward_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B/G,) bool: the groups whose G rewards are all equal (rows g*G .. g*G+G-1 are group
    g), which a group baseline gives advantages 0: GRPO's degenerate groups, the groups
    DAPO's dynamic sampling drops. ``rewards``: (B,)."""
    grouped = rewards.view(-1, group_size)  # (B/G, G)
    return (grouped == grouped[:, :1]).all(-1)  # (B/G,)


def group_metrics(rewards: torch.Tensor, correct: torch.Tensor,
                  group_size: int) -> dict[str, float]:
    """``degenerate_frac`` and its two parts for rows grouped G by G.

    Args:
        rewards: (B,) verifier rewards; rows g*G .. g*G+G-1 are group g.
        correct: (B,) bool, the verifier's verdict on each completion.
        group_size: G.
    """
    equal = equal_reward_groups(rewards, group_size)  # (B/G,)
    right = correct.view(-1, group_size)  # (B/G, G)
    return {"degenerate_frac": float(equal.float().mean()),
            "degenerate_all_wrong": float((equal & ~right.any(-1)).float().mean()),
            "degenerate_all_right": float((equal & right.all(-1)).float().mean())}


def surrogate_metrics(loss: torch.Tensor, stats: dict[str, float], logprobs: torch.Tensor,
                      batch) -> dict[str, float]:
    """``loss``, ``clip_frac`` and ``approx_kl`` of one optimiser step of GRPO or PPO, and
    ``kl_ref`` when the loss holds the reference's k3 (GRPO with a reference).

    ``stats`` are those of ``grpo_loss`` / ``ppo_policy_loss``; ``logprobs`` (B, N) those
    of the loss, ``batch`` the :class:`~course_lib.trainers.base.Batch` it was computed on.
    ``approx_kl`` is the k3 estimate of KL(pi_old || pi_theta): the tokens were sampled from
    pi_old, so :func:`course_lib.kl.kl_estimate` with pi_old as the sampling policy and
    pi_theta as the reference gives ``(rho - 1) - log rho`` per token (Schulman 2020),
    averaged over real tokens.
    """
    k3 = kl_estimate(batch.old_logprobs, logprobs.detach(), kind="k3")  # (B, N)
    out = {"loss": float(loss.detach()), "clip_frac": stats["clip_frac"],
           "approx_kl": float(masked_mean(k3, batch.mask))}
    if "kl" in stats and batch.ref_logprobs is not None:
        out["kl_ref"] = stats["kl"]  # grpo_loss's k3 KL to the reference
    return out

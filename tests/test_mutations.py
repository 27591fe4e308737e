"""The checkers can fail: deliberately wrong variants of the functions are caught.

Each mutant below is course_lib's function with ONE classic mistake (the ones learners and
frameworks actually make). Each test runs the same checker the real tests run
(``reference_impls.compare_*``, the clip-gradient checker, the seed notebook check) on the
mutant and asserts that it reports a problem. If a checker stopped detecting its mutant,
the corresponding unit test would have become unable to fail.
"""

import math

import pytest
import torch
from reference_impls import (
    clip_gradient_violations,
    compare_baseline_advantages,
    compare_dpo_loss,
    compare_gae,
    compare_group_advantages,
    compare_grpo_loss,
    compare_kl,
    compare_policy_loss_grad,
    compare_ppo_policy_loss,
    compare_value_loss,
    compare_value_loss_grad,
    compare_whiten,
    run_seed_step1,
    seed_step1_problems,
)

import course_lib
from course_lib import (
    baseline_advantages,
    compute_group_advantages,
    dpo_loss,
    gae,
    grpo_loss,
    kl_estimate,
    ppo_policy_loss,
    value_loss,
)

# ----------------------------------------------------------------------------------------
# the mutants
# ----------------------------------------------------------------------------------------


def adv_population_std(rewards, eps=1e-6, scale="group"):
    """Population std (divide by G) instead of the unbiased one, for scale="group"."""
    if scale != "group":
        return compute_group_advantages(rewards, eps, scale)
    centered = rewards - rewards.mean(-1, keepdim=True)
    return centered / (rewards.std(-1, unbiased=False, keepdim=True) + eps)


def adv_batch_mean(rewards, eps=1e-6, scale="group"):
    """Subtracts the mean of the whole batch instead of each group's mean."""
    if scale != "group":
        return compute_group_advantages(rewards, eps, scale)
    return (rewards - rewards.mean()) / (rewards.std(-1, keepdim=True) + eps)


def adv_no_exact_zero(rewards, eps=1e-6, scale="group"):
    """Right formula, but equal groups are not forced to exactly 0 (float mean rounding
    divided by eps gives large advantages)."""
    centered = rewards - rewards.mean(-1, keepdim=True)
    if scale == "group":
        return centered / (rewards.std(-1, keepdim=True) + eps)
    if scale == "batch":
        return centered / (rewards.std() + eps)
    return centered


def grpo_token_mean_for_grpo(*args, loss_type="grpo", **kwargs):
    """loss_type="grpo" averaged over all tokens (DAPO) instead of per sequence first."""
    return grpo_loss(*args, loss_type="dapo" if loss_type == "grpo" else loss_type, **kwargs)


def grpo_dr_divides_by_tokens(*args, loss_type="grpo", max_len=None, **kwargs):
    """Dr. GRPO normalised by the number of real tokens instead of B * max_len."""
    if loss_type == "dr_grpo":
        return grpo_loss(*args, loss_type="dapo", **kwargs)
    return grpo_loss(*args, loss_type=loss_type, max_len=max_len, **kwargs)


def grpo_clip_frac_ignores_sign(logprobs, old_logprobs, advantages, mask=None, **kwargs):
    """clip_frac counts every token with the ratio outside the range, whatever A's sign."""
    loss, stats = grpo_loss(logprobs, old_logprobs, advantages, mask, **kwargs)
    eps = kwargs.get("clip_eps", 0.2)
    eps_high = kwargs.get("clip_eps_high") or eps
    ratio = torch.exp(logprobs - old_logprobs)
    outside = ((ratio > 1 + eps_high) | (ratio < 1 - eps)).to(logprobs.dtype)
    m = torch.ones_like(ratio) if mask is None else mask
    return loss, {**stats, "clip_frac": float((outside * m).sum() / m.sum())}


def grpo_kl_detached(logprobs, old_logprobs, advantages, mask=None, ref_logprobs=None,
                     beta=0.04, **kwargs):
    """The right loss value, but the KL term carries no gradient (computed on detached
    log-probs): the policy is never pulled back towards the reference."""
    full, stats = grpo_loss(logprobs, old_logprobs, advantages, mask, ref_logprobs,
                            beta=beta, **kwargs)
    no_kl, _ = grpo_loss(logprobs, old_logprobs, advantages, mask, None, beta=beta, **kwargs)
    return no_kl + (full - no_kl).detach(), stats


def kl_k1_for_k3(logprobs, ref_logprobs, kind="k3"):
    """Returns the k1 estimate when asked for k3."""
    return kl_estimate(logprobs, ref_logprobs, kind="k1" if kind == "k3" else kind)


def ppo_no_clip(logprobs, old_logprobs, advantages, mask=None, clip_eps=0.2,
                clip_eps_high=None, agg="token-mean"):
    """The plain importance-weighted policy gradient loss -ratio * A, no clip."""
    _, stats = ppo_policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps,
                               clip_eps_high, agg)
    m = torch.ones_like(logprobs) if mask is None else mask
    per_token = -torch.exp(logprobs - old_logprobs) * advantages  # (B, T)
    if agg == "token-mean":
        loss = (per_token * m).sum() / m.sum()
    else:
        seq = (per_token * m).sum(-1)  # (B,)
        if agg == "seq-mean-token-mean":
            seq = seq / m.sum(-1).clamp(min=1)
        loss = seq[m.sum(-1) > 0].mean()
    return loss, stats


def gae_bootstraps_from_padding(rewards, values, mask=None, gamma=1.0, lam=0.95):
    """Ignores the mask: bootstraps from (garbage) values in the padding."""
    return gae(rewards, values, mask=None, gamma=gamma, lam=lam)


def whiten_population_var(x, mask=None):
    """Masked population variance (divide by n) instead of the unbiased one."""
    m = torch.ones_like(x) if mask is None else mask
    n = m.sum()
    mean = (x * m).sum() / n
    var = (((x - mean) * m) ** 2).sum() / n
    return (x - mean) / var.sqrt() * m


def value_loss_min(values, old_values, returns, mask=None, clip_range=0.2):
    """min instead of max of the clipped and unclipped squared errors."""
    _, stats = value_loss(values, old_values, returns, mask, clip_range)
    m = torch.ones_like(values) if mask is None else mask
    v_clip = old_values + (values - old_values).clamp(-clip_range, clip_range)
    per_token = torch.minimum((values - returns) ** 2, (v_clip - returns) ** 2)
    return 0.5 * (per_token * m).sum() / m.sum(), stats


def value_loss_clip_detached(values, old_values, returns, mask=None, clip_range=0.2):
    """The right value, but the clipped branch is built from detached values."""
    v_clip = old_values + (values.detach() - old_values).clamp(-clip_range, clip_range)
    per_token = torch.maximum((values - returns) ** 2, (v_clip - returns) ** 2)
    m = torch.ones_like(values) if mask is None else mask
    _, stats = value_loss(values, old_values, returns, mask, clip_range)
    return 0.5 * (per_token * m).sum() / m.sum(), stats


def dpo_ignores_label_smoothing(*args, label_smoothing=0.0, **kwargs):
    """Conservative DPO / rDPO label smoothing silently dropped."""
    return dpo_loss(*args, label_smoothing=0.0, **kwargs)


def dpo_rewards_without_beta(*args, beta=0.1, **kwargs):
    """Implicit rewards logged as raw log-ratios (beta forgotten in the stats)."""
    loss, stats = dpo_loss(*args, beta=beta, **kwargs)
    return loss, {k: (v / beta if k != "reward_accuracy" else v) for k, v in stats.items()}


def rloo_includes_itself(rewards, baseline="rloo"):
    """RLOO's baseline as the mean of all G rewards, r_i included (the G/(G-1) forgotten)."""
    return baseline_advantages(rewards, "mean" if baseline == "rloo" else baseline)


def rloo_divides_by_g(rewards, baseline="rloo"):
    """The sum of the other G - 1 rewards divided by G instead of G - 1."""
    if baseline != "rloo":
        return baseline_advantages(rewards, baseline)
    G = rewards.shape[-1]
    return rewards - (rewards.sum(-1, keepdim=True) - rewards) / G


# ----------------------------------------------------------------------------------------
# the checkers accept course_lib ...
# ----------------------------------------------------------------------------------------

CHECKS = {
    "compute_group_advantages": compare_group_advantages,
    "baseline_advantages": compare_baseline_advantages,
    "kl_estimate": compare_kl,
    "grpo_loss": compare_grpo_loss,
    "ppo_policy_loss": compare_ppo_policy_loss,
    "gae": compare_gae,
    "whiten": compare_whiten,
    "value_loss": compare_value_loss,
    "dpo_loss": compare_dpo_loss,
    "grpo_loss_grad": lambda fn: compare_policy_loss_grad(fn, kind="grpo"),
    "ppo_policy_loss_grad": lambda fn: compare_policy_loss_grad(fn, kind="ppo"),
    "value_loss_grad": compare_value_loss_grad,
}


# ----------------------------------------------------------------------------------------
# ... and reject every mutant
# ----------------------------------------------------------------------------------------

MUTANTS = [
    ("compute_group_advantages", adv_population_std),
    ("compute_group_advantages", adv_batch_mean),
    ("compute_group_advantages", adv_no_exact_zero),
    ("baseline_advantages", rloo_includes_itself),
    ("baseline_advantages", rloo_divides_by_g),
    ("grpo_loss", grpo_token_mean_for_grpo),
    ("grpo_loss", grpo_dr_divides_by_tokens),
    ("grpo_loss", grpo_clip_frac_ignores_sign),
    ("kl_estimate", kl_k1_for_k3),
    ("ppo_policy_loss", ppo_no_clip),
    ("gae", gae_bootstraps_from_padding),
    ("whiten", whiten_population_var),
    ("value_loss", value_loss_min),
    ("dpo_loss", dpo_ignores_label_smoothing),
    ("dpo_loss", dpo_rewards_without_beta),
    ("grpo_loss_grad", grpo_kl_detached),
    ("grpo_loss_grad", grpo_token_mean_for_grpo),
    ("ppo_policy_loss_grad", ppo_no_clip),
    ("value_loss_grad", value_loss_clip_detached),
]


@pytest.mark.parametrize("name, mutant", MUTANTS, ids=[m.__name__ for _, m in MUTANTS])
def test_checker_detects_mutant(name, mutant):
    real = getattr(course_lib, name.removesuffix("_grad"))
    assert CHECKS[name](real) == [], f"{name}: course_lib itself must pass"
    problems = CHECKS[name](mutant)
    assert problems, f"{mutant.__name__}: the {name} checker did not notice the mistake"


def test_seed_notebook_check_detects_population_std():
    # population std: advantages' unbiased std = sqrt(8/7) = 1.069 instead of 0.999998
    assert seed_step1_problems(run_seed_step1()) == []
    problems = seed_step1_problems(run_seed_step1(adv_population_std))
    assert problems and "std" in problems[0]


def test_seed_notebook_check_detects_batch_level_mean():
    # one group here, so a batch mean equals the group mean; a mutant that forgets to
    # subtract any mean prints mean != 0
    def no_centering(rewards, eps=1e-6, scale="group"):
        return rewards / (rewards.std() + eps)

    problems = seed_step1_problems(run_seed_step1(no_centering))
    assert problems and "mean" in problems[0]


def test_clip_gradient_checker_detects_missing_clip():
    # token 0: ratio e^0.5 = 1.65 > 1.2 with A = +1 (clip active, pushing out);
    # token 1: ratio e^-0.5 = 0.61 < 0.8 with A = -1 (clip active, pushing out);
    # token 2: ratio 1.1 inside the range
    log_ratio = torch.tensor([0.5, -0.5, math.log(1.1)], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    assert clip_gradient_violations(ppo_policy_loss, log_ratio, adv) == []
    violations = clip_gradient_violations(ppo_no_clip, log_ratio, adv)
    assert len(violations) == 2 and "exactly 0" in violations[0]


def test_clip_gradient_checker_detects_clip_that_kills_all_gradients():
    # clamping the ratio alone (no min with the unclipped term) zeroes the gradient also
    # where the advantage pulls back into the range (ratio 1.65 with A < 0)
    def clamp_only(logprobs, old_logprobs, advantages, mask=None, clip_eps=0.2,
                   clip_eps_high=None, agg="token-mean"):
        ratio = torch.exp(logprobs - old_logprobs).clamp(1 - clip_eps, 1 + clip_eps)
        return (-ratio * advantages).mean(), {}

    log_ratio = torch.tensor([0.5, -0.5], dtype=torch.float64)
    adv = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    assert clip_gradient_violations(ppo_policy_loss, log_ratio, adv) == []
    assert len(clip_gradient_violations(clamp_only, log_ratio, adv)) == 2

"""The assignments' checks (course_lib.grading_checks) pass right answers and fail wrong
ones with a message that says why, without a kernel (fast). The notebooks' own cells are
exercised by test_assignments.py and the round trips."""

import types

import pytest
import torch
from nbgrader_flow import solution_source

import course_lib
import course_lib.grading_checks as gc
from course_lib.grading_checks import CheckFailed


def _load(assignment, name, **extra):
    ns = {"torch": torch, "compute_group_advantages": course_lib.compute_group_advantages,
          "grpo_loss": course_lib.grpo_loss, **extra}
    exec(solution_source(assignment, name), ns)  # the instructor's solution cell
    return ns[name]


group_advantages = _load("ps1_advantages", "group_advantages")
clipped_surrogate_loss = _load("ps2_clipping", "clipped_surrogate_loss")
group_diversity = _load("ps2_clipping", "group_diversity")
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.0], [0.0, 5.0, 1.0, 0.0]])


def test_group_advantages_right_and_wrong():
    gc.check_group_advantages(group_advantages, REWARDS)
    gc.check_degenerate_groups(group_advantages, torch.full((3, 8), 0.7))

    def pop_std(r, eps=1e-6):
        return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True, unbiased=False) + eps)

    def batch_mean(r, eps=1e-6):
        return (r - r.mean()) / (r.std(-1, keepdim=True) + eps)

    def naive(r, eps=1e-6):
        return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + eps)

    with pytest.raises(CheckFailed, match="population std"):
        gc.check_group_advantages(pop_std, REWARDS)
    with pytest.raises(CheckFailed, match="sum to 0"):
        gc.check_group_advantages(batch_mean, REWARDS)
    with pytest.raises(CheckFailed, match="exactly 0"):
        gc.check_degenerate_groups(naive, torch.full((3, 8), 0.7))
    with pytest.raises(CheckFailed, match="same shape"):
        gc.check_group_advantages(lambda r, eps=1e-6: r.mean(-1), REWARDS)
    with pytest.raises(CheckFailed, match="not implemented"):
        gc.check_group_advantages(_stub, REWARDS)


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_delegation_is_detected_by_any_route():
    ref = course_lib.compute_group_advantages

    def group_advantages(r, eps=1e-6):  # calls the reference under another name
        return ref(r, eps)

    with pytest.raises(CheckFailed, match="reference implementation"):
        gc.check_group_advantages(group_advantages, REWARDS)
    # a byte-for-byte copy of the reference's code
    copy = types.FunctionType(ref.__code__, ref.__globals__, "group_advantages")
    with pytest.raises(CheckFailed, match="copy of"):
        gc.check_group_advantages(copy, REWARDS)


def test_checks_survive_patched_comparison_functions(monkeypatch):
    import math

    import numpy.testing

    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(math, "isclose", lambda *a, **k: True)
    monkeypatch.setattr(numpy.testing, "assert_allclose", lambda *a, **k: None)
    monkeypatch.setattr(torch.testing, "assert_close", lambda *a, **k: None)
    with pytest.raises(CheckFailed):
        gc.check_group_advantages(lambda r, eps=1e-6: r * 0 + 1, REWARDS)


def test_prob_and_simulation_messages():
    gc.check_prob_degenerate(lambda p, G: p**G + (1 - p) ** G, [(0.3, 8), (0.0, 4)])
    with pytest.raises(CheckFailed, match="all-failure"):
        gc.check_prob_degenerate(lambda p, G: p**G, [(0.3, 8)])
    sim = _load("ps1_advantages", "simulate_degenerate_share")
    gc.check_simulation(sim, None, [(0.5, 4), (0.2, 8)])
    with pytest.raises(CheckFailed, match="not compute the formula"):
        gc.check_simulation(lambda p, G, n, s: p**G + (1 - p) ** G, None, [(0.5, 4)])


def test_clipped_surrogate_right_and_wrong():
    batch = gc.random_surrogate_batch(5, 6, seed=11)
    gc.check_clipped_surrogate(clipped_surrogate_loss, *batch, check_grad=True)
    gc.check_clipped_surrogate(clipped_surrogate_loss,
                               *gc.random_surrogate_batch(4, 5, seed=6, empty_row=True))

    def token_mean(lp, old, adv, mask, clip_eps=0.2):
        r = torch.exp(lp - old)
        a = adv[:, None]
        per = -torch.minimum(r * a, r.clamp(1 - clip_eps, 1 + clip_eps) * a)
        return (per * mask).sum() / mask.sum()

    def detached(*args, **kw):
        return clipped_surrogate_loss(*args, **kw).detach()

    with pytest.raises(CheckFailed, match="token-mean"):
        gc.check_clipped_surrogate(token_mean, *batch)
    with pytest.raises(CheckFailed, match="sign is flipped"):
        gc.check_clipped_surrogate(lambda *a, **k: -clipped_surrogate_loss(*a, **k), *batch)
    with pytest.raises(CheckFailed, match="no gradient"):
        gc.check_clipped_surrogate(detached, *batch, check_grad=True)
    with pytest.raises(CheckFailed, match="reference implementation"):
        gc.check_clipped_surrogate(
            lambda lp, o, a, m, clip_eps=0.2: course_lib.grpo_loss(lp, o, a, m, beta=0.0)[0],
            *batch)


def test_group_diversity_right_and_wrong():
    gc.check_group_diversity(group_diversity, torch.tensor([[3, 3, 5, 7], [1, 1, 1, 1]]))
    with pytest.raises(CheckFailed, match="divide by G"):
        gc.check_group_diversity(lambda s: (group_diversity(s) * s.shape[-1]),
                                 torch.tensor([3, 3, 5, 7]))


def test_bandit_trainer_right_and_wrong():
    trainer = _load("ps3_bandit", "train_bandit_grpo")
    gc.check_bandit_trainer(trainer, [0.2, 0.8], seeds=[0], steps=100)
    gc.check_bandit_seeding(trainer, [0.2, 0.5, 0.4], steps=10)

    def worst_arm(arm_probs, **kw):  # learns, then reports the policy backwards
        return trainer(arm_probs, **kw).flip(0)

    with pytest.raises(CheckFailed, match="best arm"):
        gc.check_bandit_trainer(worst_arm, [0.2, 0.8], seeds=[0], steps=100)
    with pytest.raises(CheckFailed, match="probability vector"):
        gc.check_bandit_trainer(lambda p, **kw: torch.log(trainer(p, **kw)), [0.2, 0.8],
                                seeds=[0], steps=20)
    from course_lib.bandit import train_bandit_grpo as reference

    def train_bandit_grpo(arm_probs, **kw):
        return reference(arm_probs, **kw)

    with pytest.raises(CheckFailed, match="reference implementation"):
        gc.check_bandit_trainer(train_bandit_grpo, [0.2, 0.8], seeds=[0], steps=20)

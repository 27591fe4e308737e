"""Tests of compute_group_advantages and grpo_loss against issue 2's specification.

Three kinds of evidence: values worked out by hand in the comments, agreement with the
naive loop implementations of ``reference_impls.py`` on random inputs covering every
option, and hypothesis properties. Bad input must raise ValueError saying what is wrong.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_impls import (
    HYPOTHESIS_SETTINGS,
    clip_gradient_violations,
    compare_group_advantages,
    compare_grpo_loss,
    compare_policy_loss_grad,
)

from course_lib import compute_group_advantages, grpo_loss

LOSS_TYPES = ["grpo", "dapo", "bnpo", "dr_grpo"]

# ----------------------------------------------------------------------------------------
# compute_group_advantages: hand-computed values
# ----------------------------------------------------------------------------------------


def test_group_advantages_hand_values_group():
    # rewards [0, 1, 0, 1]: mean 0.5, deviations -0.5, 0.5, -0.5, 0.5
    # unbiased variance = 4 * 0.25 / (4 - 1) = 1/3, std = 0.5773503
    # advantages = +-0.5 / (0.5773503 + 1e-6) = +-0.8660239
    adv = compute_group_advantages(torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64))
    want = torch.tensor([-0.8660239, 0.8660239, -0.8660239, 0.8660239], dtype=torch.float64)
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-7)
    # the population std (0.5) would give +-1.0: the unbiased one gives sqrt(3)/2
    assert abs(adv[1].item() - math.sqrt(3) / 2) < 1e-5


def test_group_advantages_hand_values_none():
    # Dr. GRPO: r - mean = [-0.5, 0.5, -0.5, 0.5], no division
    adv = compute_group_advantages(torch.tensor([0.0, 1.0, 0.0, 1.0]), scale="none")
    torch.testing.assert_close(adv, torch.tensor([-0.5, 0.5, -0.5, 0.5]))


def test_group_advantages_hand_values_two_groups_group_and_batch():
    r = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)  # 2 groups of G = 2
    # "group": group 0 has mean 0.5, unbiased var = (0.25 + 0.25) / 1 = 0.5, std 0.7071068
    #   -> +-0.5 / 0.7071078 = +-0.7071058; group 1 is all equal -> exactly 0
    adv = compute_group_advantages(r)
    torch.testing.assert_close(
        adv, torch.tensor([[-0.7071058, 0.7071058], [0.0, 0.0]], dtype=torch.float64),
        rtol=0, atol=1e-7)
    assert (adv[1] == 0).all()
    # "batch": group means subtracted (0.5 and 2), divided by the std of all 4 rewards:
    #   mean 1.25, squared deviations 1.5625 + 0.0625 + 0.5625 + 0.5625 = 2.75,
    #   unbiased var 2.75 / 3 = 0.9166667, std 0.9574271 -> +-0.5 / 0.9574281 = +-0.5222324
    adv = compute_group_advantages(r, scale="batch")
    torch.testing.assert_close(
        adv, torch.tensor([[-0.5222324, 0.5222324], [0.0, 0.0]], dtype=torch.float64),
        rtol=0, atol=1e-7)


def test_group_advantages_seed_notebook_example():
    # 8 completions, 3 correct: mean 3/8 = 0.375; deviations -0.375 (x5) and 0.625 (x3)
    # sum of squares = 5 * 0.140625 + 3 * 0.390625 = 1.875; unbiased var = 1.875 / 7
    # = 0.2678571, std = 0.5175492 -> wrong: -0.375 / 0.5175502 = -0.7245674,
    # right: 0.625 / 0.5175502 = 1.2076124
    r = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    adv = compute_group_advantages(r)
    want = torch.where(r > 0, torch.tensor(1.2076124), torch.tensor(-0.7245674))
    torch.testing.assert_close(adv, want, rtol=0, atol=1e-6)
    assert adv.dtype == torch.float32 and adv.shape == (8,)


def test_group_advantages_eps_is_added_to_the_std():
    # std of [0, 2] is sqrt(2) = 1.4142136; with eps = 0.5: 1 / 1.9142136 = 0.5224077
    adv = compute_group_advantages(torch.tensor([0.0, 2.0], dtype=torch.float64), eps=0.5)
    torch.testing.assert_close(adv, torch.tensor([-0.5224077, 0.5224077], dtype=torch.float64),
                               rtol=0, atol=1e-7)


def test_group_advantages_match_reference_every_scale():
    problems = compare_group_advantages(compute_group_advantages)
    assert problems == [], "\n".join(problems[:20])


# ----------------------------------------------------------------------------------------
# compute_group_advantages: properties
# ----------------------------------------------------------------------------------------

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@st.composite
def reward_groups(draw, min_groups=1, max_groups=4):
    """(n_groups, G) float64 rewards; either continuous or 0/1 (then equal groups occur)."""
    n = draw(st.integers(min_groups, max_groups))
    G = draw(st.integers(2, 8))
    elems = st.sampled_from([0.0, 1.0]) if draw(st.booleans()) else finite
    rows = draw(st.lists(st.lists(elems, min_size=G, max_size=G), min_size=n, max_size=n))
    return torch.tensor(rows, dtype=torch.float64)


@settings(**HYPOTHESIS_SETTINGS)
@given(r=reward_groups(), scale=st.sampled_from(["group", "none", "batch"]))
def test_property_advantages_sum_to_zero_per_group(r, scale):
    adv = compute_group_advantages(r, scale=scale)
    assert adv.shape == r.shape and adv.dtype == r.dtype
    sums = adv.sum(-1)
    # relative to the size of the advantages in the group
    assert (sums.abs() <= 1e-9 * (1 + adv.abs().sum(-1))).all(), (
        f"advantages should sum to 0 within each group; sums {sums.tolist()}")


def _spread_enough(r):
    # invariance holds up to eps: keep groups with std well above eps (or exactly equal)
    std = r.std(-1)
    return bool(((std > 0.05) | (std == 0)).all())


@settings(**HYPOTHESIS_SETTINGS)
@given(r=reward_groups(), shift=st.floats(-50, 50), c=st.floats(0.1, 20))
def test_property_group_scale_invariant_to_shift_and_positive_scaling(r, shift, c):
    if not _spread_enough(r):
        return
    adv = compute_group_advantages(r)
    shifted = compute_group_advantages(r + shift)
    scaled = compute_group_advantages(r * c)
    # eps = 1e-6 against a std >= 0.05 (>= 0.005 after scaling by c >= 0.1): relative
    # effect of eps at most 2e-4
    torch.testing.assert_close(shifted, adv, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scaled, adv, rtol=1e-4, atol=1e-4)


@settings(**HYPOTHESIS_SETTINGS)
@given(r=reward_groups(min_groups=2), value=finite, which=st.integers(0, 100),
       scale=st.sampled_from(["group", "none", "batch"]))
def test_property_all_equal_group_gets_exactly_zero(r, value, which, scale):
    g = which % r.shape[0]
    r[g] = value  # this group's rewards are all equal
    adv = compute_group_advantages(r, scale=scale)
    assert (adv[g] == 0).all(), f"all-equal group got {adv[g].tolist()}, should be exactly 0"
    # float32 too, with a value whose mean is not exact in binary (0.1 * G / G)
    r32 = torch.full((3, 7), 0.1)
    assert (compute_group_advantages(r32, scale=scale) == 0).all()


# ----------------------------------------------------------------------------------------
# grpo_loss: hand-computed values
# ----------------------------------------------------------------------------------------


def _hand_batch():
    """B = 2 sequences, T = 3 tokens, old log-probs -1, ratios chosen by hand.

    seq 0: A = +1, ratios [1.0, 1.5, 0.5], all 3 tokens real
      tok 0: -min(1.0, 1.0) = -1.0
      tok 1: -min(1.5, clip 1.2) = -1.2        (clipped term used: ratio > 1.2, A > 0)
      tok 2: -min(0.5, clip 0.8) = -0.5        (not clipped: pushes back towards 1)
      sum -2.7 over 3 tokens, mean -0.9
    seq 1: A = -1, ratios [0.5, 1.5, 7.0], mask [1, 1, 0]
      tok 0: -min(-0.5, -0.8) = 0.8            (clipped term used: ratio < 0.8, A < 0)
      tok 1: -min(-1.5, -1.2) = 1.5            (not clipped)
      tok 2: padding, ignored (ratio 7 would be clipped)
      sum 2.3 over 2 tokens, mean 1.15
    5 real tokens, 2 of them clipped: clip_frac 0.4; ratio_mean (1+1.5+0.5+0.5+1.5)/5 = 1.
    """
    old = torch.full((2, 3), -1.0, dtype=torch.float64)  # (B, T)
    ratios = torch.tensor([[1.0, 1.5, 0.5], [0.5, 1.5, 7.0]], dtype=torch.float64)
    logp = old + ratios.log()  # (B, T)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)  # (B,)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "loss_type, kwargs, want",
    [
        ("grpo", {}, 0.125),  # (-0.9 + 1.15) / 2
        ("dapo", {}, -0.08),  # (-2.7 + 2.3) / 5 tokens
        ("bnpo", {}, -0.08),  # alias of dapo
        ("dr_grpo", {}, -0.4 / 6),  # (-2.7 + 2.3) / (B * T) = -0.4 / (2 * 3)
        ("dr_grpo", {"max_len": 4}, -0.05),  # -0.4 / (2 * 4)
        # clip-higher: seq 0 tok 1 becomes -min(1.5, 1.28) = -1.28; tok 0 of seq 1 still
        # clipped at 0.8 (eps_low stays 0.2): (-2.78 + 2.3) / 5 = -0.096
        ("dapo", {"clip_eps_high": 0.28}, -0.096),
    ],
)
def test_grpo_loss_hand_values(loss_type, kwargs, want):
    logp, old, adv, mask = _hand_batch()
    loss, stats = grpo_loss(logp, old, adv, mask=mask, beta=0.0, loss_type=loss_type,
                            **kwargs)
    assert loss.dim() == 0
    assert abs(loss.item() - want) < 1e-9
    assert stats["clip_frac"] == pytest.approx(0.4, abs=1e-12)
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-12)
    assert stats["kl"] == 0.0  # no ref_logprobs


@pytest.mark.parametrize(
    "loss_type, want",
    [
        # every token has ref = logp + log(0.5): log(pi_ref/pi) = -log 2, so
        # k3 = 0.5 + log 2 - 1 = 0.1931472; beta = 0.1 adds 0.01931472 to each token
        ("grpo", 0.125 + 0.01931472),  # a mean of means: + 0.01931472
        ("dapo", -0.08 + 0.01931472),  # a token mean: + 0.01931472
        ("dr_grpo", -0.4 / 6 + 0.01931472 * 5 / 6),  # 5 real tokens out of B * T = 6
    ],
)
def test_grpo_loss_hand_values_with_kl(loss_type, want):
    logp, old, adv, mask = _hand_batch()
    ref = logp + math.log(0.5)
    loss, stats = grpo_loss(logp, old, adv, mask=mask, ref_logprobs=ref, beta=0.1,
                            loss_type=loss_type)
    assert abs(loss.item() - want) < 1e-7
    assert stats["kl"] == pytest.approx(0.5 + math.log(2) - 1, abs=1e-9)  # mean k3


def test_grpo_loss_beta_zero_ignores_ref():
    logp, old, adv, mask = _hand_batch()
    ref = logp + math.log(0.5)
    loss, _ = grpo_loss(logp, old, adv, mask=mask, ref_logprobs=ref, beta=0.0)
    assert abs(loss.item() - 0.125) < 1e-9


def test_grpo_loss_default_mask_and_per_token_advantages():
    logp, old, adv, _ = _hand_batch()
    # no mask: seq 1 gets its third token, ratio 7 with A = -1: -min(-7, -1.2) = 7
    # seq 1 mean = (0.8 + 1.5 + 7) / 3 = 3.1; grpo = (-0.9 + 3.1) / 2 = 1.1
    loss, stats = grpo_loss(logp, old, adv, beta=0.0)
    assert abs(loss.item() - 1.1) < 1e-9
    assert stats["clip_frac"] == pytest.approx(2 / 6)
    # (B,) advantages and the same values broadcast to (B, T) give the same loss
    loss_bt, _ = grpo_loss(logp, old, adv[:, None].expand(2, 3).clone(), beta=0.0)
    assert abs(loss_bt.item() - 1.1) < 1e-12


def test_grpo_loss_empty_sequence_is_left_out_of_the_mean():
    logp, old, adv, mask = _hand_batch()
    # add a third sequence with no real token: "grpo" is still (-0.9 + 1.15) / 2
    logp3 = torch.cat([logp, torch.zeros(1, 3, dtype=torch.float64)])
    old3 = torch.cat([old, torch.zeros(1, 3, dtype=torch.float64)])
    adv3 = torch.cat([adv, torch.tensor([5.0], dtype=torch.float64)])
    mask3 = torch.cat([mask, torch.zeros(1, 3, dtype=torch.float64)])
    loss, stats = grpo_loss(logp3, old3, adv3, mask=mask3, beta=0.0)
    assert abs(loss.item() - 0.125) < 1e-9
    assert stats["clip_frac"] == pytest.approx(0.4)


def test_grpo_loss_is_zero_at_ratio_one_but_gradient_is_not():
    # FAQ "why is the GRPO loss 0 at the start?": ratio 1, advantages of a group sum to 0,
    # beta = 0, full mask: each sequence's mean is -A_i, their mean is -mean(A) = 0.
    # d loss / d logp_{i,t} = -A_i / (|o_i| * B) with |o_i| = T = 4, B = 4.
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    adv = compute_group_advantages(rewards)  # +-0.8660
    old = -torch.rand(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logp = old.clone().requires_grad_(True)
    loss, stats = grpo_loss(logp, old, adv, beta=0.0)
    assert abs(loss.item()) < 1e-12
    assert stats["ratio_mean"] == 1.0 and stats["clip_frac"] == 0.0
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, (-adv / 16)[:, None].expand(4, 4))


def test_grpo_loss_match_reference_every_option():
    problems = compare_grpo_loss(grpo_loss)
    assert problems == [], "\n".join(problems[:20])


def test_grpo_loss_gradient_matches_hand_derivative_every_option():
    # per token: 0 where the clipped term is used, else -ratio * A; plus
    # beta * (1 - pi_ref/pi) from the k3 term; times the token's weight in the aggregation
    problems = compare_policy_loss_grad(grpo_loss, kind="grpo")
    assert problems == [], "\n".join(problems[:20])


def test_grpo_loss_kl_gradient_hand_value():
    # one token, ratio 1 (A = 0 so only the KL term acts), ref = logp + log 0.5, beta = 0.1:
    # d/dlogp beta * k3 = beta * (1 - pi_ref/pi) = 0.1 * (1 - 0.5) = 0.05
    logp = torch.tensor([[-1.0]], dtype=torch.float64, requires_grad=True)
    loss, _ = grpo_loss(logp, logp.detach(), torch.zeros(1, dtype=torch.float64),
                        ref_logprobs=logp.detach() + math.log(0.5), beta=0.1)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad.item() == pytest.approx(0.05, abs=1e-12)


def test_grpo_loss_overflow_is_guarded():
    # log-ratio 1000 (policy moved absurdly far): exp would overflow to inf and, with
    # A < 0, the loss to inf; the log-ratio is clamped, so loss and gradient stay finite
    old = torch.zeros(2, 2)
    logp = torch.tensor([[1000.0, 0.0], [-1000.0, 0.0]], requires_grad=True)
    adv = torch.tensor([-1.0, 1.0])
    loss, stats = grpo_loss(logp, old, adv, ref_logprobs=old - 1000.0)
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert all(math.isfinite(v) for v in stats.values())


def test_grpo_loss_bool_mask_same_as_float_mask():
    logp, old, adv, mask = _hand_batch()
    loss_f, stats_f = grpo_loss(logp, old, adv, mask=mask)
    loss_b, stats_b = grpo_loss(logp, old, adv, mask=mask.bool())
    assert loss_f.item() == loss_b.item() and stats_f == stats_b


def test_grpo_loss_stats_are_python_floats():
    logp, old, adv, mask = _hand_batch()
    _, stats = grpo_loss(logp, old, adv, mask=mask, ref_logprobs=logp - 0.3)
    assert {"clip_frac", "kl", "ratio_mean"} <= set(stats)
    assert all(isinstance(v, float) for v in stats.values())
    # k3 at log(pi_ref/pi) = -0.3: exp(-0.3) + 0.3 - 1 = 0.0408182
    assert stats["kl"] == pytest.approx(math.exp(-0.3) + 0.3 - 1, abs=1e-9)


# ----------------------------------------------------------------------------------------
# grpo_loss: gradient of the clipped surrogate (property)
# ----------------------------------------------------------------------------------------


@st.composite
def ratio_and_advantage(draw, clip_eps, clip_eps_high):
    """(B,) log-ratios and non-zero advantages, away from the clip boundaries."""
    B = draw(st.integers(1, 12))
    lo, hi = math.log(1 - clip_eps), math.log(1 + clip_eps_high)
    log_ratio = draw(st.lists(
        st.floats(-1.0, 1.0).filter(lambda x: abs(x - lo) > 1e-6 and abs(x - hi) > 1e-6),
        min_size=B, max_size=B))
    adv = draw(st.lists(st.floats(-5, 5).filter(lambda a: abs(a) > 1e-3),
                        min_size=B, max_size=B))
    return (torch.tensor(log_ratio, dtype=torch.float64),
            torch.tensor(adv, dtype=torch.float64))


@settings(**HYPOTHESIS_SETTINGS)
@given(data=st.data(), loss_type=st.sampled_from(LOSS_TYPES),
       eps=st.sampled_from([(0.2, None), (0.2, 0.28), (0.1, 0.5)]))
def test_property_clip_gradient_zero_exactly_where_clip_pushes_out(data, loss_type, eps):
    log_ratio, adv = data.draw(ratio_and_advantage(eps[0], eps[1] or eps[0]))

    def loss_fn(logp, old, a, clip_eps, clip_eps_high):
        return grpo_loss(logp, old, a[:, 0], clip_eps=clip_eps, clip_eps_high=clip_eps_high,
                         beta=0.0, loss_type=loss_type)

    violations = clip_gradient_violations(loss_fn, log_ratio, adv, *eps)
    assert violations == [], "\n".join(violations)


# ----------------------------------------------------------------------------------------
# bad input: ValueError saying what is wrong
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rewards, match",
    [
        (torch.tensor([1.0]), "at least 2"),  # G = 1
        (torch.zeros(3, 1), "at least 2"),  # 3 groups of 1
        (torch.tensor(1.0), "at least 2"),  # a scalar
        (torch.tensor([0.0, float("nan"), 1.0]), "NaN"),
        (torch.tensor([0.0, float("inf"), 1.0]), "inf"),
        (torch.tensor([0.0, -float("inf")]), "inf"),
        (torch.tensor([0, 1, 0, 1]), "floating-point"),  # int64 rewards
        (torch.tensor([True, False]), "floating-point"),
        ([0.0, 1.0], "torch.Tensor"),  # a list
    ],
)
def test_group_advantages_bad_input(rewards, match):
    with pytest.raises(ValueError, match=match):
        compute_group_advantages(rewards)


def test_group_advantages_unknown_scale():
    with pytest.raises(ValueError, match="scale.*'std'"):
        compute_group_advantages(torch.tensor([0.0, 1.0]), scale="std")


def test_group_advantages_nan_message_counts():
    with pytest.raises(ValueError, match="rewards contains 2 NaN and 1 inf"):
        compute_group_advantages(torch.tensor([float("nan")] * 2 + [float("inf"), 0.0]))


def _ok_batch():
    logp, old, adv, mask = _hand_batch()
    return dict(logprobs=logp, old_logprobs=old, advantages=adv, mask=mask)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"old_logprobs": torch.zeros(2, 4, dtype=torch.float64)}, "shape"),
        ({"advantages": torch.zeros(3, dtype=torch.float64)}, "advantages"),
        ({"advantages": torch.zeros(2, 4, dtype=torch.float64)}, "advantages"),
        ({"mask": torch.ones(2, 4, dtype=torch.float64)}, "mask"),
        ({"mask": torch.full((2, 3), 0.5, dtype=torch.float64)}, "mask.*0 and 1"),
        ({"mask": torch.full((2, 3), 2.0, dtype=torch.float64)}, "mask.*0 and 1"),
        ({"mask": torch.zeros(2, 3, dtype=torch.float64)}, "mask is empty"),
        ({"ref_logprobs": torch.zeros(2, 2, dtype=torch.float64)}, "ref_logprobs"),
        ({"beta": -0.1}, "beta"),
        ({"clip_eps": 0.0}, "clip_eps"),
        ({"clip_eps": 1.0}, "clip_eps"),
        ({"clip_eps": -0.2}, "clip_eps"),
        ({"clip_eps": 1.5}, "clip_eps"),
        ({"clip_eps_high": 0.0}, "clip_eps_high"),
        ({"clip_eps_high": 1.0}, "clip_eps_high"),
        ({"loss_type": "ppo"}, "loss_type.*'ppo'"),
        ({"logprobs": torch.zeros(2, 3, dtype=torch.long)}, "logprobs.*floating-point"),
        ({"logprobs": torch.zeros(6, dtype=torch.float64)}, "logprobs"),
        ({"advantages": torch.tensor([float("nan"), 1.0], dtype=torch.float64)}, "NaN"),
    ],
)
def test_grpo_loss_bad_input(change, match):
    kwargs = {**_ok_batch(), **change}
    with pytest.raises(ValueError, match=match):
        grpo_loss(**kwargs)

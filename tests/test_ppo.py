"""Tests of ppo_policy_loss, gae, whiten and value_loss against issue 2's specification."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_impls import (
    HYPOTHESIS_SETTINGS,
    clip_gradient_violations,
    compare_gae,
    compare_policy_loss_grad,
    compare_ppo_policy_loss,
    compare_value_loss,
    compare_value_loss_grad,
    compare_whiten,
    ref_reward_to_go,
)

from course_lib import gae, ppo_policy_loss, value_loss, whiten

F64 = torch.float64

# ----------------------------------------------------------------------------------------
# ppo_policy_loss
# ----------------------------------------------------------------------------------------


def _hand_batch():
    """The batch of test_grpo's hand case, with the advantages given per token.

    seq 0 (A = +1 on each token), ratios [1.0, 1.5, 0.5]: token losses -1.0, -1.2 (clipped),
    -0.5; seq 1 (A = -1), ratios [0.5, 1.5, (7.0 padding)]: 0.8 (clipped), 1.5.
    """
    old = torch.full((2, 3), -1.0, dtype=F64)  # (B, T)
    logp = old + torch.tensor([[1.0, 1.5, 0.5], [0.5, 1.5, 7.0]], dtype=F64).log()
    adv = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]], dtype=F64)  # (B, T)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=F64)
    return logp, old, adv, mask


@pytest.mark.parametrize(
    "agg, want",
    [
        ("token-mean", -0.08),  # (-2.7 + 2.3) / 5 real tokens
        ("seq-mean-token-mean", 0.125),  # (-2.7 / 3 + 2.3 / 2) / 2 = (-0.9 + 1.15) / 2
        ("seq-mean-token-sum", -0.2),  # (-2.7 + 2.3) / 2 sequences
    ],
)
def test_ppo_policy_loss_hand_values(agg, want):
    logp, old, adv, mask = _hand_batch()
    loss, stats = ppo_policy_loss(logp, old, adv, mask=mask, agg=agg)
    assert loss.dim() == 0 and abs(loss.item() - want) < 1e-9
    assert stats["clip_frac"] == pytest.approx(0.4)  # 2 of 5 real tokens
    assert all(isinstance(v, float) for v in stats.values())


def test_ppo_policy_loss_default_is_token_mean_and_clip_eps_high():
    logp, old, adv, mask = _hand_batch()
    loss, _ = ppo_policy_loss(logp, old, adv, mask=mask)
    assert abs(loss.item() + 0.08) < 1e-9
    # clip_eps_high = 0.28: seq 0 tok 1 -> -1.28, so (-2.78 + 2.3) / 5 = -0.096
    loss, _ = ppo_policy_loss(logp, old, adv, mask=mask, clip_eps_high=0.28)
    assert abs(loss.item() + 0.096) < 1e-9


def test_ppo_policy_loss_matches_reference_every_agg():
    problems = compare_ppo_policy_loss(ppo_policy_loss)
    assert problems == [], "\n".join(problems[:20])


def test_ppo_policy_loss_gradient_matches_hand_derivative():
    problems = compare_policy_loss_grad(ppo_policy_loss, kind="ppo")
    assert problems == [], "\n".join(problems[:20])


@st.composite
def ratio_and_advantage(draw, clip_eps, clip_eps_high):
    B = draw(st.integers(1, 12))
    lo, hi = math.log(1 - clip_eps), math.log(1 + clip_eps_high)
    log_ratio = draw(st.lists(
        st.floats(-1.0, 1.0).filter(lambda x: abs(x - lo) > 1e-6 and abs(x - hi) > 1e-6),
        min_size=B, max_size=B))
    adv = draw(st.lists(st.floats(-5, 5).filter(lambda a: abs(a) > 1e-3),
                        min_size=B, max_size=B))
    return torch.tensor(log_ratio, dtype=F64), torch.tensor(adv, dtype=F64)


@settings(**HYPOTHESIS_SETTINGS)
@given(data=st.data(),
       agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]),
       eps=st.sampled_from([(0.2, None), (0.2, 0.28), (0.1, 0.5)]))
def test_property_clip_gradient_zero_exactly_where_clip_pushes_out(data, agg, eps):
    # ratio > 1 + eps_high with A > 0, or ratio < 1 - eps with A < 0: gradient exactly 0;
    # elsewhere (inside the clip range, or outside it with A pulling back) -ratio * A / B
    log_ratio, adv = data.draw(ratio_and_advantage(eps[0], eps[1] or eps[0]))

    def loss_fn(logp, old, a, clip_eps, clip_eps_high):
        return ppo_policy_loss(logp, old, a, clip_eps=clip_eps, clip_eps_high=clip_eps_high,
                               agg=agg)

    violations = clip_gradient_violations(loss_fn, log_ratio, adv, *eps)
    assert violations == [], "\n".join(violations)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"old_logprobs": torch.zeros(2, 4, dtype=F64)}, "shape"),
        ({"advantages": torch.zeros(2, dtype=F64)}, "advantages"),
        ({"mask": torch.full((2, 3), 0.5, dtype=F64)}, "mask.*0 and 1"),
        ({"mask": torch.ones(3, 3, dtype=F64)}, "mask"),
        ({"mask": torch.zeros(2, 3, dtype=F64)}, "mask is empty"),
        ({"clip_eps": 0.0}, "clip_eps"),
        ({"clip_eps": 1.0}, "clip_eps"),
        ({"clip_eps_high": -0.1}, "clip_eps_high"),
        ({"agg": "seq-sum"}, "agg.*'seq-sum'"),
        ({"logprobs": torch.zeros(2, 3, dtype=torch.int64)}, "floating-point"),
        ({"advantages": torch.full((2, 3), float("inf"), dtype=F64)}, "inf"),
    ],
)
def test_ppo_policy_loss_bad_input(change, match):
    logp, old, adv, mask = _hand_batch()
    kwargs = dict(logprobs=logp, old_logprobs=old, advantages=adv, mask=mask)
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        ppo_policy_loss(**kwargs)


# ----------------------------------------------------------------------------------------
# gae
# ----------------------------------------------------------------------------------------


def test_gae_hand_values():
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma 1, lam 0.95, V after the end = 0
    #   t=2: delta = 1 + 0 - 0.7 = 0.3;     A2 = 0.3
    #   t=1: delta = 0 + 0.7 - 0.6 = 0.1;   A1 = 0.1 + 0.95 * 0.3 = 0.385
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1;   A0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    v = torch.tensor([[0.5, 0.6, 0.7]], dtype=F64)
    adv, ret = gae(r, v)  # defaults gamma = 1, lam = 0.95
    torch.testing.assert_close(adv, torch.tensor([[0.46575, 0.385, 0.3]], dtype=F64))
    torch.testing.assert_close(ret, torch.tensor([[0.96575, 0.985, 1.0]], dtype=F64))
    # gamma 0.9, lam 0.5 (gamma * lam = 0.45):
    #   t=2: A2 = 0.3
    #   t=1: delta = 0.9 * 0.7 - 0.6 = 0.03;  A1 = 0.03 + 0.45 * 0.3 = 0.165
    #   t=0: delta = 0.9 * 0.6 - 0.5 = 0.04;  A0 = 0.04 + 0.45 * 0.165 = 0.11425
    adv, ret = gae(r, v, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.11425, 0.165, 0.3]], dtype=F64))
    torch.testing.assert_close(ret, torch.tensor([[0.61425, 0.765, 1.0]], dtype=F64))


def test_gae_hand_values_with_padding():
    # mask [1, 1, 0]: the last real token is t=1, the bootstrap after it is 0 (the garbage
    # reward 5 and value 9 in the padding must not leak in)
    #   t=1: delta = 1 + 0 - 0.6 = 0.4;    A1 = 0.4
    #   t=0: delta = 0 + 0.6 - 0.5 = 0.1;  A0 = 0.1 + 0.95 * 0.4 = 0.48
    r = torch.tensor([[0.0, 1.0, 5.0]], dtype=F64)
    v = torch.tensor([[0.5, 0.6, 9.0]], dtype=F64)
    m = torch.tensor([[1.0, 1.0, 0.0]], dtype=F64)
    adv, ret = gae(r, v, mask=m)
    torch.testing.assert_close(adv[:, :2], torch.tensor([[0.48, 0.4]], dtype=F64))
    torch.testing.assert_close(ret[:, :2], torch.tensor([[0.98, 1.0]], dtype=F64))


def test_gae_matches_reference():
    problems = compare_gae(gae)
    assert problems == [], "\n".join(problems[:20])


def test_gae_returns_are_advantages_plus_values_and_raw():
    gen = torch.Generator().manual_seed(3)
    r, v = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv, ret = gae(r, v, mask=m)
    torch.testing.assert_close(ret, adv + v)  # literally, everywhere
    # raw, not whitened: the mean of 9 real advantages of random data is not 0
    assert abs(float((adv * m).sum() / m.sum())) > 1e-3


@st.composite
def rewards_values_mask(draw):
    B, T = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    vals = st.floats(-5, 5)
    r = draw(st.lists(st.lists(vals, min_size=T, max_size=T), min_size=B, max_size=B))
    v = draw(st.lists(st.lists(vals, min_size=T, max_size=T), min_size=B, max_size=B))
    lengths = draw(st.lists(st.integers(0, T), min_size=B, max_size=B))
    mask = [[1.0 if t < n else 0.0 for t in range(T)] for n in lengths]
    return (torch.tensor(r, dtype=F64), torch.tensor(v, dtype=F64),
            torch.tensor(mask, dtype=F64))


@settings(**HYPOTHESIS_SETTINGS)
@given(rvm=rewards_values_mask())
def test_property_gae_lam1_gamma1_returns_are_reward_to_go(rvm):
    # with lam = gamma = 1 the deltas telescope: A_t + V_t = sum_{t' >= t} r_t', whatever
    # the values are
    r, v, m = rvm
    _, ret = gae(r, v, mask=m, gamma=1.0, lam=1.0)
    want = ref_reward_to_go(r.tolist(), m.tolist())
    for b in range(r.shape[0]):
        for t in range(r.shape[1]):
            if want[b][t] is not None:
                assert ret[b, t].item() == pytest.approx(want[b][t], abs=1e-9)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 4)), {}, "shape"),
        ((torch.zeros(2, 3), torch.zeros(2, 3)), {"mask": torch.full((2, 3), 0.5)},
         "mask.*0 and 1"),
        ((torch.zeros(2, 3), torch.zeros(2, 3)), {"mask": torch.ones(2, 2)}, "mask"),
        ((torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), {}, "floating-point"),
        ((torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2)), {}, "NaN"),
        ((torch.zeros(2, 3), torch.zeros(2, 3)), {"gamma": 1.5}, "gamma"),
        ((torch.zeros(2, 3), torch.zeros(2, 3)), {"lam": -0.1}, "lam"),
    ],
)
def test_gae_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gae(*args, **kwargs)


# ----------------------------------------------------------------------------------------
# whiten
# ----------------------------------------------------------------------------------------


def test_whiten_hand_values():
    # [1, 2, 3, 4]: mean 2.5, unbiased var (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3,
    # std 1.2909944 -> [-1.1618950, -0.3872983, 0.3872983, 1.1618950]
    out = whiten(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=F64))
    torch.testing.assert_close(
        out, torch.tensor([[-1.1618950, -0.3872983, 0.3872983, 1.1618950]], dtype=F64),
        rtol=0, atol=1e-6)
    # masked: [1, 2, 3 | 100 padding]: mean 2, unbiased var (1 + 0 + 1) / 2 = 1 -> [-1, 0, 1]
    out = whiten(torch.tensor([[1.0, 2.0, 3.0, 100.0]], dtype=F64),
                 mask=torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=F64))
    torch.testing.assert_close(out[:, :3], torch.tensor([[-1.0, 0.0, 1.0]], dtype=F64),
                               rtol=0, atol=1e-6)


def test_whiten_matches_reference():
    problems = compare_whiten(whiten)
    assert problems == [], "\n".join(problems[:20])


@settings(**HYPOTHESIS_SETTINGS)
@given(x=st.lists(st.floats(-100, 100), min_size=3, max_size=30),
       keep=st.lists(st.booleans(), min_size=30, max_size=30))
def test_property_whiten_masked_mean0_unbiased_var1(x, keep):
    t = torch.tensor(x, dtype=F64)
    m = torch.tensor([1.0 if k else 0.0 for k in keep[: len(x)]], dtype=F64)
    m[:2] = 1.0  # at least two real entries
    real = t[m > 0]
    if real.std() < 1e-3:  # (near-)constant data: variance 1 is impossible up to eps
        return
    out = whiten(t, mask=m)[m > 0]
    assert abs(out.mean().item()) < 1e-9
    assert out.var(unbiased=True).item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(
    "x, mask, match",
    [
        (torch.zeros(2, 3), torch.full((2, 3), 0.3), "mask.*0 and 1"),
        (torch.zeros(2, 3), torch.ones(3, 2), "mask"),
        (torch.arange(6.0).reshape(2, 3), torch.zeros(2, 3), "at least 2"),  # empty mask
        (torch.arange(6.0).reshape(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]),
         "at least 2"),  # one real entry: no unbiased variance
        (torch.arange(6).reshape(2, 3), None, "floating-point"),
    ],
)
def test_whiten_bad_input(x, mask, match):
    with pytest.raises(ValueError, match=match):
        whiten(x, mask=mask)


# ----------------------------------------------------------------------------------------
# value_loss
# ----------------------------------------------------------------------------------------


def test_value_loss_hand_values():
    # c = 0.2, three tokens (v, old, R):
    #   (1.0, 0.5, 2.0): (v-R)^2 = 1; v-old = 0.5 -> 0.2, v_clip = 0.7, (0.7-2)^2 = 1.69
    #                    max 1.69, the clipped term is used
    #   (0.0, 0.5, 0.0): (v-R)^2 = 0; v-old = -0.5 -> -0.2, v_clip = 0.3, 0.09; max 0.09, clipped
    #   (0.5, 0.5, 0.0): both 0.25 (no move), not counted as clipped
    #   loss = 0.5 * (1.69 + 0.09 + 0.25) / 3 = 0.3383333; clip_frac = 2/3
    v = torch.tensor([[1.0, 0.0, 0.5]], dtype=F64)
    old = torch.tensor([[0.5, 0.5, 0.5]], dtype=F64)
    ret = torch.tensor([[2.0, 0.0, 0.0]], dtype=F64)
    loss, stats = value_loss(v, old, ret)
    assert loss.dim() == 0 and abs(loss.item() - 0.5 * 2.03 / 3) < 1e-12
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    assert all(isinstance(x, float) for x in stats.values())
    # with the first token masked out: 0.5 * (0.09 + 0.25) / 2 = 0.085, clip_frac 1/2
    loss, stats = value_loss(v, old, ret, mask=torch.tensor([[0.0, 1.0, 1.0]], dtype=F64))
    assert abs(loss.item() - 0.085) < 1e-12 and stats["clip_frac"] == pytest.approx(0.5)
    # clip_range 1.0: nothing is clipped, plain 0.5 * MSE = 0.5 * (1 + 0 + 0.25) / 3
    loss, stats = value_loss(v, old, ret, clip_range=1.0)
    assert abs(loss.item() - 0.5 * 1.25 / 3) < 1e-12 and stats["clip_frac"] == 0.0


def test_value_loss_matches_reference():
    problems = compare_value_loss(value_loss)
    assert problems == [], "\n".join(problems[:20])


def test_value_loss_gradient_matches_hand_derivative():
    # 0.5 * d/dv max(u, c) / N: 2 (v - R) where the unclipped square is used or v moved
    # less than c; 0 where the clipped square is used and v moved more than c
    problems = compare_value_loss_grad(value_loss)
    assert problems == [], "\n".join(problems[:20])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"old_values": torch.zeros(1, 4)}, "shape"),
        ({"returns": torch.zeros(2, 3)}, "shape"),
        ({"mask": torch.tensor([[1.0, 0.5, 1.0]])}, "mask.*0 and 1"),
        ({"mask": torch.zeros(1, 3)}, "mask is empty"),
        ({"values": torch.zeros(1, 3, dtype=torch.long)}, "floating-point"),
        ({"returns": torch.tensor([[0.0, float("nan"), 0.0]])}, "NaN"),
        ({"clip_range": 0.0}, "clip_range"),
    ],
)
def test_value_loss_bad_input(change, match):
    kwargs = dict(values=torch.zeros(1, 3), old_values=torch.zeros(1, 3),
                  returns=torch.ones(1, 3))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        value_loss(**kwargs)


# --------------------------------------------------------------- KL-shaped rewards ----
def test_kl_shaped_rewards_hand_values():
    """InstructGPT Eq. 2 per token: -beta * kl everywhere, the score on the last real token."""
    from course_lib.ppo import kl_shaped_rewards

    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    r = kl_shaped_rewards(torch.tensor([1.0, 0.0]), kl, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.01, -0.02, 1.0 - 0.03], [-0.05, 0.01, 0.0]])
    assert torch.allclose(r, expected)
    assert torch.equal(kl_shaped_rewards(torch.tensor([2.0, 3.0]), torch.zeros(2, 3), mask, 0.0),
                       torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))


@pytest.mark.parametrize("args, match", [
    ((torch.ones(3), torch.zeros(2, 3), torch.ones(2, 3), 0.1), "scores must have shape"),
    ((torch.ones(2), torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 0]]), 0.1),
     "no real token"),
    ((torch.tensor([1.0, float("nan")]), torch.zeros(2, 3), torch.ones(2, 3), 0.1), "NaN"),
    ((torch.ones(2), torch.zeros(2, 3), torch.ones(2, 3), -0.1), "kl_coef"),
    ((torch.ones(2), torch.zeros(2, 3), torch.ones(2, 4), 0.1), "shape"),
])
def test_kl_shaped_rewards_rejects_bad_input(args, match):
    from course_lib.ppo import kl_shaped_rewards

    with pytest.raises(ValueError, match=match):
        kl_shaped_rewards(*args)

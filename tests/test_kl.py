"""Tests of kl_estimate (k1, k2, k3 of Schulman 2020) against issue 2's specification."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_impls import HYPOTHESIS_SETTINGS, compare_kl

from course_lib import kl_estimate


def test_kl_hand_values():
    # pi_theta = 0.5, pi_ref = 0.25 at the sampled token: log(pi_ref/pi_theta) = -log 2
    #   k1 = logp - ref = log 2 = 0.6931472
    #   k2 = 0.5 * (log 2)^2 = 0.2402265
    #   k3 = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1 = 0.5 + 0.6931472 - 1 = 0.1931472
    # pi_theta = 0.25, pi_ref = 0.5: log(pi_ref/pi_theta) = +log 2
    #   k1 = -0.6931472, k2 = 0.2402265, k3 = 2 - 0.6931472 - 1 = 0.3068528
    logp = torch.tensor([math.log(0.5), math.log(0.25)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25), math.log(0.5)], dtype=torch.float64)
    want = {"k1": [0.6931472, -0.6931472], "k2": [0.2402265, 0.2402265],
            "k3": [0.1931472, 0.3068528]}
    for kind, w in want.items():
        got = kl_estimate(logp, ref, kind=kind)
        torch.testing.assert_close(got, torch.tensor(w, dtype=torch.float64), rtol=0,
                                   atol=1e-7)
    # k3 is the default
    torch.testing.assert_close(kl_estimate(logp, ref), kl_estimate(logp, ref, kind="k3"))


def test_kl_estimators_are_unbiased_for_k1_and_k3():
    # Exact expectation over a small vocabulary (no sampling): with x ~ pi_theta,
    # E[k1] = sum p log(p/q) = KL(p||q) and E[k3] = E[q/p] - E[log(q/p)] - 1 = 1 + KL - 1.
    # k2 is biased: here E[k2] differs from KL.
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())  # 0.2469... nats
    for kind in ("k1", "k3"):
        expectation = float((p * kl_estimate(p.log(), q.log(), kind=kind)).sum())
        assert expectation == pytest.approx(kl, abs=1e-12), kind
    assert float((p * kl_estimate(p.log(), q.log(), kind="k2")).sum()) != pytest.approx(kl)


def test_kl_matches_reference():
    problems = compare_kl(kl_estimate)
    assert problems == [], "\n".join(problems[:20])


def test_kl_shape_and_dtype_preserved():
    x = torch.zeros(2, 3, 4)
    out = kl_estimate(x, x - 0.1)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float32


def test_kl_overflow_is_guarded():
    # log(pi_ref/pi_theta) = 1000 would overflow exp in any dtype; the log-ratio is
    # clamped (bound documented in the docstring), so the estimate stays finite and > 0.
    logp = torch.tensor([-1000.0, 0.0])
    ref = torch.tensor([0.0, -1000.0])
    for kind in ("k1", "k2", "k3"):
        out = kl_estimate(logp, ref, kind=kind)
        assert torch.isfinite(out).all(), (kind, out)
    assert (kl_estimate(logp, ref) > 0).all()
    assert "clamp" in kl_estimate.__doc__.lower()


# ----------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------

logprob = st.floats(-30, 0, allow_nan=False)


@settings(**HYPOTHESIS_SETTINGS)
@given(pairs=st.lists(st.tuples(logprob, logprob), min_size=1, max_size=20),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_property_k3_nonnegative(pairs, dtype):
    logp = torch.tensor([a for a, _ in pairs], dtype=dtype)
    ref = torch.tensor([b for _, b in pairs], dtype=dtype)
    k3 = kl_estimate(logp, ref, kind="k3")
    assert (k3 >= 0).all(), f"k3 must be >= 0, got {k3.min().item()!r}"
    assert (kl_estimate(logp, ref, kind="k2") >= 0).all()


# Regression: exp(x) - x - 1 rounds to -6e-8 in float32 (e.g. logp 0.0,
# ref 5.824233849127782e-08) and to -1e-16 in float64; kl.py computes expm1(x) - x instead.
@settings(**HYPOTHESIS_SETTINGS)
@given(pairs=st.lists(st.tuples(logprob, st.floats(-1e-6, 1e-6)), min_size=1, max_size=20),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_property_k3_nonnegative_near_agreement(pairs, dtype):
    # log-ratios within 1e-6 of 0: where exp(x) - x - 1 is pure rounding
    logp = torch.tensor([a for a, _ in pairs], dtype=dtype)
    ref = logp + torch.tensor([d for _, d in pairs], dtype=dtype)
    k3 = kl_estimate(logp, ref, kind="k3")
    assert (k3 >= 0).all(), f"k3 must be >= 0, got {k3.min().item()!r}"


def test_k3_rounding_case_found_by_hypothesis():
    # log(pi_ref/pi) = 5.8e-8 in float32: exp(x) - x - 1 rounds to -5.96e-8 there; the
    # true k3 is x^2 / 2 = 1.7e-15, which must not come out negative
    logp = torch.tensor([0.0])
    ref = torch.tensor([5.824233849127782e-08])
    assert (torch.exp(ref - logp) - (ref - logp) - 1).item() < 0  # the naive formula
    assert kl_estimate(logp, ref).item() >= 0


@settings(**HYPOTHESIS_SETTINGS)
@given(logps=st.lists(logprob, min_size=1, max_size=20),
       dtype=st.sampled_from([torch.float64, torch.float32]),
       kind=st.sampled_from(["k1", "k2", "k3"]))
def test_property_zero_when_distributions_agree(logps, dtype, kind):
    logp = torch.tensor(logps, dtype=dtype)
    assert (kl_estimate(logp, logp.clone(), kind=kind) == 0).all()


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logp, ref, kwargs, match",
    [
        (torch.zeros(2, 3), torch.zeros(2, 4), {}, "shape"),
        (torch.zeros(3), torch.zeros(3), {"kind": "k4"}, "kind.*'k4'"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3), {}, "logprobs.*floating-point"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.int32), {}, "ref_logprobs.*floating"),
        (torch.tensor([0.0, float("nan")]), torch.zeros(2), {}, "NaN"),
        (torch.zeros(2), torch.tensor([0.0, -float("inf")]), {}, "inf"),
    ],
)
def test_kl_bad_input(logp, ref, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kl_estimate(logp, ref, **kwargs)

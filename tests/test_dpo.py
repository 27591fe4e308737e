"""Tests of dpo_loss (DPO, cDPO, IPO, hinge, rDPO) against issue 2's specification."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_impls import HYPOTHESIS_SETTINGS, compare_dpo_loss

from course_lib import dpo_loss

F64 = torch.float64


def _one_pair():
    # policy: chosen -1.0, rejected -2.0; reference: both -1.5
    # chosen log-ratio +0.5, rejected log-ratio -0.5, margin h = 1.0; beta = 0.1 -> z = 0.1
    t = lambda x: torch.tensor([x], dtype=F64)  # noqa: E731
    return t(-1.0), t(-2.0), t(-1.5), t(-1.5)


@pytest.mark.parametrize(
    "loss_type, ls, want",
    [
        # -log sigmoid(0.1) = log(1 + e^-0.1) = log(1.9048374) = 0.6443967
        ("sigmoid", 0.0, 0.6443967),
        # cDPO e = 0.1: 0.9 * 0.6443967 + 0.1 * (-log sigmoid(-0.1)) where
        # -log sigmoid(-0.1) = log(1 + e^0.1) = 0.7443967 -> 0.5799570 + 0.0744397 = 0.6543967
        ("sigmoid", 0.1, 0.6543967),
        # IPO: (h - 1 / (2 beta))^2 = (1 - 5)^2 = 16
        ("ipo", 0.0, 16.0),
        # hinge: relu(1 - beta h) = relu(0.9) = 0.9
        ("hinge", 0.0, 0.9),
        # rDPO e = 0.1: (0.9 * 0.6443967 - 0.1 * 0.7443967) / (1 - 0.2)
        #   = (0.5799570 - 0.0744397) / 0.8 = 0.6318967
        ("robust", 0.1, 0.6318967),
        ("robust", 0.0, 0.6443967),  # e = 0: plain DPO
    ],
)
def test_dpo_hand_values(loss_type, ls, want):
    loss, stats = dpo_loss(*_one_pair(), beta=0.1, loss_type=loss_type, label_smoothing=ls)
    assert loss.dim() == 0 and abs(loss.item() - want) < 1e-7
    # implicit rewards beta * log-ratio: chosen 0.05, rejected -0.05; margin 0.1; accuracy 1
    assert stats["chosen_rewards"] == pytest.approx(0.05)
    assert stats["rejected_rewards"] == pytest.approx(-0.05)
    assert stats["reward_margin"] == pytest.approx(0.1)
    assert stats["reward_accuracy"] == 1.0
    assert all(isinstance(v, float) for v in stats.values())


def test_dpo_loss_is_mean_over_pairs_and_stats_two_pairs():
    # pair 0 as above (h = +1); pair 1 swapped (h = -1): losses 0.6443967 and 0.7443967,
    # mean 0.6943967. Rewards: chosen [0.05, -0.05], rejected [-0.05, 0.05] -> means 0 and
    # 0, accuracy 1/2, margin mean (0.1 - 0.1) / 2 = 0
    pc = torch.tensor([-1.0, -2.0], dtype=F64)
    pr = torch.tensor([-2.0, -1.0], dtype=F64)
    ref = torch.tensor([-1.5, -1.5], dtype=F64)
    loss, stats = dpo_loss(pc, pr, ref, ref.clone())
    assert abs(loss.item() - 0.6943967) < 1e-7
    assert stats["reward_accuracy"] == 0.5
    assert stats["chosen_rewards"] == pytest.approx(0.0, abs=1e-12)
    assert stats["rejected_rewards"] == pytest.approx(0.0, abs=1e-12)
    assert stats["reward_margin"] == pytest.approx(0.0, abs=1e-12)


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    # d/d pc of -log sigmoid(beta h) = -beta * sigmoid(-beta h) < 0 (descent raises pc);
    # at h = 1, beta = 0.1: -0.1 * sigmoid(-0.1) = -0.0475021; the rejected gets +0.0475021
    pc, pr, rc, rr = (x.clone().requires_grad_(True) for x in _one_pair())
    loss, _ = dpo_loss(pc, pr, rc, rr)
    loss.backward()
    s = 1 / (1 + math.exp(0.1))
    assert pc.grad.item() == pytest.approx(-0.1 * s)
    assert pr.grad.item() == pytest.approx(0.1 * s)


def test_dpo_matches_reference_every_loss_type():
    problems = compare_dpo_loss(dpo_loss)
    assert problems == [], "\n".join(problems[:20])


@settings(**HYPOTHESIS_SETTINGS)
@given(chosen=st.lists(st.floats(-200, 0), min_size=1, max_size=16),
       data=st.data(), beta=st.floats(0.01, 5.0),
       ls=st.sampled_from([0.0, 0.1, 0.25]))
def test_property_sigmoid_loss_is_log2_when_policy_equals_reference(chosen, data, beta, ls):
    # margin 0: -(1 - e) log sigmoid(0) - e log sigmoid(0) = log 2 for any e
    n = len(chosen)
    rejected = data.draw(st.lists(st.floats(-200, 0), min_size=n, max_size=n))
    pc, pr = torch.tensor(chosen, dtype=F64), torch.tensor(rejected, dtype=F64)
    loss, stats = dpo_loss(pc, pr, pc.clone(), pr.clone(), beta=beta, label_smoothing=ls)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert stats["reward_margin"] == 0.0 and stats["reward_accuracy"] == 0.0


def test_dpo_docstring_says_ipo_is_defined_on_length_averaged_logprobs():
    # issue 2: "say in the docstring that IPO is defined on length-averaged log-probs"
    doc = " ".join(dpo_loss.__doc__.split()).lower()
    assert "ipo is defined on length-averaged log-probs" in doc


@pytest.mark.parametrize(
    "change, match",
    [
        ({"policy_rejected_logps": torch.zeros(3)}, "shape"),
        ({"ref_chosen_logps": torch.zeros(2, 1)}, "shape"),
        ({"beta": -0.1}, "beta"),
        ({"loss_type": "kto"}, "loss_type.*'kto'"),
        ({"policy_chosen_logps": torch.zeros(2, dtype=torch.long)}, "floating-point"),
        ({"ref_rejected_logps": torch.tensor([0.0, float("nan")])}, "NaN"),
        ({"label_smoothing": 0.7}, "label_smoothing"),
        ({"label_smoothing": 0.5, "loss_type": "robust"}, "label_smoothing"),
    ],
)
def test_dpo_bad_input(change, match):
    kwargs = dict(policy_chosen_logps=torch.zeros(2), policy_rejected_logps=torch.zeros(2),
                  ref_chosen_logps=torch.zeros(2), ref_rejected_logps=torch.zeros(2))
    kwargs.update(change)
    with pytest.raises(ValueError, match=match):
        dpo_loss(**kwargs)

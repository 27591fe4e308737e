"""The assignments' trusted checks (course_lib.grading.checks) accept each correct answer and
reject its mutants with a message that says why; fast, in-process (the same comparisons
the grader runs, through the notebooks' local caller). The grader's own path is exercised
by tests/test_grading_adversarial.py and the round trips."""

import pytest
import torch
from nbgrader_flow import solution_source

import course_lib.grading.checks as gc
from course_lib.grading import rules
from course_lib.grading.checks import CheckFailed


def _load(assignment, name, **extra):
    ns = {"torch": torch, **extra}
    exec(solution_source(assignment, name), ns)  # the instructor's solution cell
    return ns[name]


def _mutant(assignment, name, old, new):
    src = solution_source(assignment, name)
    assert old in src, old
    ns = {"torch": torch}
    exec(src.replace(old, new), ns)
    return ns[name]


group_advantages = _load("ps1_advantages", "group_advantages")
simulate = _load("ps1_advantages", "simulate_degenerate_share")
clipped_surrogate_loss = _load("ps2_clipping", "clipped_surrogate_loss")
group_diversity = _load("ps2_clipping", "group_diversity")
trainer = _load("ps3_bandit", "train_bandit_grpo")
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 2.0], [0.0, 5.0, 1.0, 0.0]])


def test_group_advantages_correct_and_mutants():
    gc.check_group_advantages(group_advantages, REWARDS)
    gc.check_degenerate_groups(group_advantages, torch.full((3, 8), 0.7))
    A = "ps1_advantages"
    cases = [
        ("std(dim=-1, keepdim=True)", "std(dim=-1, keepdim=True, unbiased=False)",
         "population std"),
        ("rewards.mean(dim=-1, keepdim=True)", "rewards.mean()", "sum to 0"),
        ("(std + eps)", "1.0", "do not divide"),
        ("return torch.where(all_equal, torch.zeros_like(adv), adv)", "return adv",
         "exactly 0"),
        ("return torch.where(all_equal, torch.zeros_like(adv), adv)", "return adv.mean(-1)",
         "same shape"),
    ]
    for old, new, match in cases:
        bad = _mutant(A, "group_advantages", old, new)
        with pytest.raises(CheckFailed, match=match):
            gc.check_group_advantages(bad, REWARDS)
            gc.check_degenerate_groups(bad, torch.full((3, 8), 0.7))
    with pytest.raises(CheckFailed, match="not implemented"):
        gc.check_group_advantages(_stub, REWARDS)


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_prob_and_simulation_correct_and_mutants():
    gc.check_prob_degenerate(lambda p, G: p**G + (1 - p) ** G, [(0.3, 8), (0.0, 4)])
    with pytest.raises(CheckFailed, match="all-failure"):
        gc.check_prob_degenerate(lambda p, G: p**G, [(0.3, 8)])
    gc.check_simulation(simulate, [(0.5, 4), (0.2, 8)])
    A = "ps1_advantages"
    only_ones = _mutant(A, "simulate_degenerate_share", "(rewards == rewards[:, :1]).all(dim=1)",
                        "(rewards == 1).all(dim=1)")
    with pytest.raises(CheckFailed, match="all-failure"):
        gc.check_simulation(only_ones, [(0.5, 4)])
    too_few = _mutant(A, "simulate_degenerate_share", "source.draw(n_groups * G)",
                      "torch.cat([source.draw(n_groups * G // 2)] * 2)")
    with pytest.raises(CheckFailed, match="draw exactly"):
        gc.check_simulation(too_few, [(0.5, 4)])

    def formula(source, G, n_groups=20_000):  # right in expectation, but draws nothing
        source.draw(n_groups * G)
        return 0.5**G * 2

    with pytest.raises(CheckFailed, match="do not compute a formula"):
        gc.check_simulation(formula, [(0.5, 4)])


def test_clipped_surrogate_correct_and_mutants():
    batch = gc.random_surrogate_batch(5, 6, seed=11)
    gc.check_clipped_surrogate(clipped_surrogate_loss, batch, check_grad=True)
    gc.check_clipped_surrogate(clipped_surrogate_loss,
                               gc.random_surrogate_batch(4, 5, seed=6, empty_row=True))
    A = "ps2_clipping"
    cases = [
        ("per_seq[lengths > 0].mean()", "(per_token * mask).sum() / mask.sum()", "token-mean"),
        ("-torch.minimum(unclipped, clipped)", "torch.minimum(unclipped, clipped)",
         "sign is flipped"),
        ("-torch.minimum(unclipped, clipped)", "-torch.maximum(unclipped, clipped)",
         "pessimistic"),
        ("torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv", "ratio * adv", "never clipped"),
        ("(per_token * mask).sum(dim=-1)", "per_token.sum(dim=-1)", "real tokens"),
        ("return per_seq[lengths > 0].mean()", "return per_seq[lengths > 0].mean().detach()",
         "no gradient"),
    ]
    for old, new, match in cases:
        bad = _mutant(A, "clipped_surrogate_loss", old, new)
        with pytest.raises(CheckFailed, match=match):
            gc.check_clipped_surrogate(bad, batch, check_grad=True)


def test_group_diversity_correct_and_mutants():
    gc.check_group_diversity(group_diversity, torch.tensor([[3, 3, 5, 7], [1, 1, 1, 1]]))
    gc.check_group_diversity(group_diversity, gc.random_ints((3, 2, 6), 5, seed=4))
    bad = _mutant("ps2_clipping", "group_diversity", "distinct.float() / G", "distinct.float()")
    with pytest.raises(CheckFailed, match="divide by G"):
        gc.check_group_diversity(bad, torch.tensor([3, 3, 5, 7]))


def test_bandit_trainer_correct_and_mutants():
    gc.check_bandit_trainer(trainer, [0.2, 0.8], seeds=[0], steps=100)
    gc.check_bandit_seeding(trainer, [0.2, 0.5, 0.4], steps=10)
    gc.check_bandit_grpo_update(trainer, [0.2, 0.5, 0.4], seed=0, steps=30)
    A = "ps3_bandit"
    cases = [
        ("loss.backward()", "(-loss).backward()", "check_bandit_trainer", "best arm"),
        ("for _ in range(2):", "for _ in range(1):", "check_bandit_grpo_update", "GRPO computes"),
        ("clipped * adv).mean()", "ratio * adv).mean()", "check_bandit_grpo_update",
         "GRPO computes"),
        ("generator=g)", "generator=None)", "check_bandit_seeding", "different results"),
        ("manual_seed(seed)", "manual_seed(0)", "check_bandit_seeding", "identical results"),
        ("rewards = env.pull(arms)", "rewards = torch.cat([env.pull(arms), env.pull(arms)])[:"
         "group_size]", "check_bandit_grpo_update", "pulls"),
        ("return torch.softmax(logits.detach(), dim=-1)",
         "return torch.log_softmax(logits.detach(), dim=-1)", "check_bandit_trainer",
         "probability vector"),
    ]
    for old, new, check, match in cases:
        bad = _mutant(A, "train_bandit_grpo", old, new)
        probs, kwargs = HIDDEN_UPDATE
        if check == "check_bandit_trainer":
            probs, kwargs = [0.2, 0.8], {"steps": 100, "seeds": [0]}
        elif check == "check_bandit_seeding":
            probs, kwargs = [0.2, 0.5, 0.4], {"steps": 30}
        with pytest.raises(CheckFailed, match=match):
            getattr(gc, check)(bad, probs, **kwargs)


# the hidden update test of ps3 (its clip range binds: the no-clip mutant is caught)
HIDDEN_UPDATE = (gc.make_bandit(10, min_gap=0.2, seed=78).arm_probs.tolist(),
                 {"seed": 5, "steps": 60, "group_size": 4, "lr": 0.3, "clip_eps": 0.1})


def test_explore_then_commit_is_not_grpo():
    """A learner that pulls every arm and returns the empirical best one-hot finds the best
    arm without GRPO: the update check tells them apart."""
    def explore(env, group_size=8, steps=300, lr=0.1, clip_eps=0.2, seed=0):
        n = group_size * steps // env.n_arms
        means = torch.stack([env.pull(torch.full((n,), k)).mean() for k in range(env.n_arms)])
        return torch.nn.functional.one_hot(means.argmax(), env.n_arms).float()

    gc.check_bandit_trainer(explore, [0.2, 0.8], seeds=[0], steps=100)
    with pytest.raises(CheckFailed, match="GRPO"):
        gc.check_bandit_grpo_update(explore, [0.2, 0.5, 0.4], seed=0, steps=30)


def test_an_opaque_bandit_hides_its_probabilities_and_counts_pulls():
    from course_lib.bandit import BanditEnv

    env = BanditEnv([0.1, 0.9], seed=0, budget=4)
    assert not [k for k in vars(env) if "prob" in k and not k.startswith("_")]
    assert env.pull(torch.tensor([0, 1])).tolist() in ([0.0, 1.0], [0.0, 0.0], [1.0, 1.0],
                                                        [1.0, 0.0])
    with pytest.raises(ValueError, match="budget"):
        env.pull(torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="integers"):
        env.pull(torch.tensor([0.5]))


@pytest.mark.parametrize("source, bad", [
    ("import course_lib\n", "import course_lib"),
    ("from course_lib.bandit import grpo_bandit\n", "from course_lib.bandit"),
    ("import threading\n", "import threading"),
    ("import importlib\nimportlib.import_module('course_lib')\n", "import importlib"),
    ("import ctypes\n", "import ctypes"),
    ("def f(x):\n    return eval('x')\n", "eval"),
    ("def f(x):\n    return x.__class__.__subclasses__()\n", ".__class__"),
    ("def f(x):\n    return getattr(x, 'y')\n", "getattr"),
    ("import torch\ntorch.load('x')\n", ".load"),
    ("__import__('os')\n", "__import__"),
])
def test_the_rule_refuses_what_could_reach_the_reference(source, bad):
    found = rules.violations(source)
    assert found and any(bad in f for f in found), found


def test_the_rule_accepts_the_solutions():
    for a, names in (("ps1_advantages", ["group_advantages", "prob_degenerate_group",
                                         "simulate_degenerate_share"]),
                     ("ps2_clipping", ["clipped_surrogate_loss", "group_diversity"]),
                     ("ps3_bandit", ["train_bandit_grpo"])):
        for name in names:
            assert rules.violations(solution_source(a, name)) == [], (a, name)


def test_the_local_checks_apply_the_rule_to_course_lib_globals():
    from course_lib import compute_group_advantages

    ns = {"torch": torch, "compute_group_advantages": compute_group_advantages}
    exec("def group_advantages(r, eps=1e-6):\n    return compute_group_advantages(r, eps)\n", ns)
    with pytest.raises(CheckFailed, match="course_lib"):
        gc.check_group_advantages(ns["group_advantages"], REWARDS)


def test_hidden_failures_keep_the_hint_without_the_values():
    def pop(r, eps=1e-6):
        return (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True, unbiased=False) + eps)

    with pytest.raises(CheckFailed) as exc:
        gc.check_group_advantages(pop, torch.tensor([0.25, 1.5, -2.0]))
    assert "0.188" in str(exc.value) and "0.188" not in exc.value.hidden()
    assert "population std" in exc.value.hidden()

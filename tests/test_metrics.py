"""Every history key of every trainer is defined once, in trainers.metrics.METRICS, and
the shared metrics mean what the table says (degenerate split, entropy, KL, grad norms)."""

import types

import pytest
import torch

from course_lib.sft import warm_start
from course_lib.tasks import AdditionTask, MultiStepSumTask
from course_lib.trainers import TRAINERS
from course_lib.trainers.metrics import METRICS, TIMINGS, group_metrics

RUNS = [  # (trainer, config fields): together they log every key of METRICS
    ("grpo", {"prompts_per_step": 4, "mu": 2, "beta": 0.04}),
    ("grpo", {"prompts_per_step": 4, "prompt_sampling": "prioritized",
              "dynamic_sampling": True}),
    ("ppo", {"prompts_per_step": 16, "mu": 2, "minibatches": 2}),
    ("reinforce", {"prompts_per_step": 4, "kl_coef": 0.05}),
    ("reinforce", {"prompts_per_step": 4, "dynamic_sampling": True}),
    ("ppo", {"prompts_per_step": 16, "kl_coef": 0.0, "prompt_sampling": "prioritized"}),
    ("dpo", {"pair_prompts": 100, "batch_size": 16}),
]


@pytest.fixture(scope="module")
def histories():
    task = AdditionTask(seed=0, n_test=20)
    warm = warm_start(AdditionTask(seed=0), seed=0).state_dict()
    out = []
    for name, fields in RUNS:
        trainer_cls, config_cls = TRAINERS[name]
        policy = warm_start(AdditionTask(seed=0), seed=0)
        policy.load_state_dict(warm)
        cfg = config_cls(steps=2, eval_every=1, seed=0, lr=1e-3, **fields)
        out.append((name, fields, trainer_cls(policy, task, cfg).train(progress=False)))
    return out


def test_every_logged_key_is_documented_and_every_documented_key_is_logged(histories):
    logged = set()
    for name, _, h in histories:
        undocumented = set(h) - set(METRICS)
        assert not undocumented, (name, undocumented)
        logged |= set(h)
        assert len({len(v) for k, v in h.items() if not k.startswith("eval")}) == 1
    stale = set(METRICS) - logged - {"step_by_step_frac"}  # below, on the R1 task
    assert not stale, f"documented but never logged: {stale}"
    assert set(TIMINGS) <= set(METRICS)


def test_the_shared_metrics_mean_what_the_table_says(histories):
    for name, fields, h in histories:
        assert all(g > 0 for g in h["grad_norm"]), name
        if name == "dpo":
            assert "entropy" not in h and "reward_mean" not in h
            continue
        assert all(0 < e < torch.log(torch.tensor(14.0)) for e in h["entropy"]), name
        assert all(1 <= n <= 4 for n in h["response_len"])
        if name in ("grpo", "reinforce"):
            for d, w, r in zip(h["degenerate_frac"], h["degenerate_all_wrong"],
                               h["degenerate_all_right"], strict=True):
                assert d == pytest.approx(w + r)
        if fields.get("mu", 1) > 1:  # later updates see a moved policy
            assert all(k > 0 for k in h["approx_kl"]) and "clip_frac" in h
        if name == "grpo" and fields.get("mu", 1) == 1:
            assert h["approx_kl"] == [0.0, 0.0] and h["clip_frac"] == [0.0, 0.0]
        assert ("kl_ref" in h) == (name == "grpo" and "beta" in fields)
        default_kl = 0.02 if name == "ppo" else 0.0  # PPOConfig.kl_coef, ReinforceConfig's
        holds_reference = fields.get("beta", 0) > 0 or fields.get("kl_coef", default_kl) > 0
        assert ("kl_ref_k1" in h) == holds_reference, name
        assert ("adv_std" in h) == (name in ("grpo", "reinforce"))
        assert ("sampling_rounds" in h) == fields.get("dynamic_sampling", False), name
        assert ("train_unsolved" in h) == (fields.get("prompt_sampling") == "prioritized")
    ppo = next(h for n, _, h in histories if n == "ppo")
    assert all(g > 0 for g in ppo["value_grad_norm"])


def test_group_metrics_split_degenerate_groups_into_wrong_and_right():
    rewards = torch.tensor([0., 0., 1., 1., 0., 1., 0.5, 0.5])  # 4 groups of 2
    correct = torch.tensor([False, False, True, True, False, True, False, False])
    m = group_metrics(rewards, correct, 2)
    # groups: all wrong, all right, mixed, all wrong (format reward only)
    assert m == {"degenerate_frac": 0.75, "degenerate_all_wrong": 0.5,
                 "degenerate_all_right": 0.25}


def test_step_by_step_share_on_the_r1_task():
    task = MultiStepSumTask(seed=0, n_test=10)
    trainer_cls, config_cls = TRAINERS["grpo"]
    from course_lib.model import ModelConfig, TinyGPT

    policy = TinyGPT(ModelConfig(block_size=32, n_layer=1, n_embd=16, n_head=2), seed=0)
    h = trainer_cls(policy, task, config_cls(steps=1, prompts_per_step=2, eval_every=0)).train(
        progress=False)
    assert set(h) <= set(METRICS) and 0.0 <= h["step_by_step_frac"][0] <= 1.0


def test_trl_callback_logs_the_trainers_eval_keys():
    tb = pytest.importorskip("course_lib.trl_bridge")
    from course_lib.model import ModelConfig, TinyGPT

    task = AdditionTask(seed=0, n_test=10)
    cb = tb.HeldOutAccuracy(task, eval_every=1)
    model = TinyGPT(ModelConfig(n_layer=1, n_embd=16, n_head=2), seed=0)
    state = types.SimpleNamespace(global_step=0, max_steps=1)
    cb.on_train_begin(None, state, None, model=model)
    state.global_step = 1
    cb.on_step_end(None, state, types.SimpleNamespace(should_training_stop=False), model=model)
    assert set(cb.history) <= set(METRICS)
    assert len(cb.history["eval_seconds"]) == len(cb.history["eval_wall"]) == 2

"""Tests of course_lib.trainers and course_lib.sft: one update moves each loss the right way,
each trainer improves the reward within a few steps, bad configs fail clearly, same seed ->
same history, and the cached warm start equals a freshly trained one."""

import copy
import dataclasses
import math

import pytest
import torch

from course_lib.model import ModelConfig, TinyGPT, sample
from course_lib.sft import SFTConfig, warm_start
from course_lib.tasks import PAD_ID, AdditionTask
from course_lib.trainers import (
    TRAINERS,
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    ReinforceConfig,
    ReinforceTrainer,
    evaluate,
)
from course_lib.trainers.base import Batch
from course_lib.trainers.metrics import TIMINGS

SMALL = ModelConfig(block_size=16, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def task():
    # the running example's training prompts; only the first 50 held-out prompts, so the
    # evaluations the trainers run before and after training stay fast
    return AdditionTask(seed=0, n_test=50)


@pytest.fixture(scope="module")
def warm_state():
    # the course's warm start (cached on disk after the first build, a few seconds)
    return warm_start(AdditionTask(seed=0), seed=0).state_dict()


def warm_policy(warm_state):
    m = TinyGPT(ModelConfig(), seed=0)
    m.load_state_dict(warm_state)
    return m


def sample_accuracy(policy, task, n_prompts=400, k=4, seed=123):
    """Mean reward of temperature-1 samples on training prompts (what RL maximises)."""
    prompts = [p for p in task.train[:n_prompts] for _ in range(k)]
    out = sample(policy, task.encode_prompts(prompts), task.max_new_tokens,
                 generator=torch.Generator().manual_seed(seed))
    texts = [task.decode(t) for t in out.tokens]
    return float(task.rewards(prompts, texts).mean())


# ----------------------------------------------------------------- warm start ----------

def test_warm_start_is_weak_but_not_hopeless(warm_state):
    acc = evaluate(warm_policy(warm_state), AdditionTask(seed=0), split="test")
    assert 0.15 <= acc <= 0.40, acc


def test_warm_start_cache_equals_training_and_is_atomic(task, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_LIB_CACHE", str(tmp_path))
    cfg = SFTConfig(max_steps=6, target_accuracy=None)
    fresh = warm_start(task, seed=3, model_config=SMALL, sft_config=cfg)
    assert fresh.warm_start_info["cache_hit"] is False
    loaded = warm_start(task, seed=3, model_config=SMALL, sft_config=cfg)
    assert loaded.warm_start_info["cache_hit"] is True
    uncached = warm_start(task, seed=3, model_config=SMALL, sft_config=cfg, use_cache=False)
    for a, b, c in zip(fresh.state_dict().values(), loaded.state_dict().values(),
                       uncached.state_dict().values(), strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".pt")  # no temporary file left behind
    other = warm_start(task, seed=4, model_config=SMALL, sft_config=cfg)
    assert not torch.equal(other.tok_emb.weight, fresh.tok_emb.weight)  # seed is in the key


# ------------------------------------------------------- one update on a fixed batch ----

def fixed_grpo_batch(trainer):
    batch = trainer.rollout()
    trainer.score(batch)
    trainer.compute_targets(batch)
    return batch


def test_one_grpo_update_lowers_the_grpo_loss_on_its_batch(task, warm_state):
    # A small step (Adam's first step moves every weight by ~lr, so lr must be small for the
    # ratio to stay inside the clip range) lowers the clipped surrogate on the same batch.
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        tr = GRPOTrainer(warm_policy(warm_state), task,
                         GRPOConfig(seed=0, lr=1e-4, loss_type=loss_type))
        batch = fixed_grpo_batch(tr)
        assert batch.advantages.abs().sum() > 0, "need a batch with mixed-reward groups"
        before = tr.update(batch)["loss"]
        after = tr.update(batch)["loss"]  # same batch, same old log-probs, moved policy
        assert after < before - 1e-3, (loss_type, before, after)


def test_grpo_with_beta_holds_a_reference_and_logs_kl(task, warm_state):
    tr = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=0, lr=1e-4, beta=0.04))
    assert tr.parameters_held()["reference"] == tr.parameters_held()["policy"]
    batch = fixed_grpo_batch(tr)
    assert tr.update(batch)["kl_ref"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert tr.update(batch)["kl_ref"] > 0
    assert GRPOTrainer(warm_policy(warm_state), task, GRPOConfig()).reference is None


def test_grpo_update_moves_logprobs_in_the_advantage_direction(task, warm_state):
    tr = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=1, lr=1e-4))
    batch = fixed_grpo_batch(tr)
    from course_lib.model import completion_logprobs
    lp0 = completion_logprobs(tr.policy, batch.prompt_ids, batch.tokens, batch.mask).detach()
    tr.update(batch)
    lp1 = completion_logprobs(tr.policy, batch.prompt_ids, batch.tokens, batch.mask).detach()
    change = ((lp1 - lp0) * batch.mask).sum(-1)  # (B,) change of sequence log-prob
    pos, neg = batch.advantages > 0, batch.advantages < 0
    assert change[pos].mean() > 0 > change[neg].mean()


@pytest.mark.parametrize("name", ["grpo", "reinforce"])
def test_reusing_the_rollout_forward_gives_the_same_gradient(task, warm_state, name):
    # The on-policy shortcut (backpropagate through the sampling pass) must change nothing
    # but the time: on one batch, the same loss and gradient as a fresh forward pass.
    trainer_cls, config_cls = TRAINERS[name]
    tr = trainer_cls(warm_policy(warm_state), task,
                     config_cls(seed=3, prompts_per_step=8, reuse_rollout_forward=True))
    losses, grads = [], []

    def capture(loss):  # backward only, weights unchanged
        tr.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        losses.append(float(loss))
        grads.append(torch.cat([p.grad.flatten() for p in tr.policy.parameters()]))
        return {}

    tr.optimizer_step = capture
    batch = tr.rollout()
    assert batch.logprobs.requires_grad and not batch.old_logprobs.requires_grad
    torch.testing.assert_close(batch.logprobs.detach(), batch.old_logprobs)
    tr.score(batch)
    tr.compute_targets(batch)
    assert batch.advantages.abs().sum() > 0, "need a batch with mixed-reward groups"
    tr.update(batch)  # through the rollout's graph (taken out of the batch)
    assert batch.logprobs is None
    tr.update(batch)  # a fresh forward pass on the same batch and weights
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert grads[0].norm() > 0
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    off = trainer_cls(warm_policy(warm_state), task,
                      config_cls(seed=3, prompts_per_step=8, reuse_rollout_forward=False))
    assert off.rollout().logprobs is None


def test_grpo_with_several_updates_recomputes_the_logprobs(task, warm_state):
    tr = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=0, mu=2))
    assert tr.rollout().logprobs is None  # mu > 1: the ratio must see the moved policy


def test_one_ppo_update_lowers_policy_and_value_loss(task, warm_state):
    tr = PPOTrainer(warm_policy(warm_state), task, PPOConfig(seed=0, lr=1e-4, critic_lr=1e-3))
    batch = fixed_grpo_batch(tr)
    first = tr.update(batch)
    second = tr.update(batch)
    assert second["loss"] < first["loss"] - 1e-3
    assert second["value_loss"] < first["value_loss"]


def test_one_dpo_update_lowers_the_dpo_loss_from_log2(task, warm_state):
    tr = DPOTrainer(warm_policy(warm_state), task,
                    DPOConfig(seed=0, lr=1e-3, pair_prompts=200, batch_size=64))
    batch = tr.rollout()
    first = tr.update(batch)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    second = tr.update(batch)
    assert second["loss"] < first["loss"] - 1e-3
    assert second["reward_accuracy"] > 0.5


# ------------------------------------------------- each trainer improves the reward ----

@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, margin", [
    ("grpo", {"steps": 50}, 0.05),
    ("ppo", {"steps": 25}, 0.05),
    ("reinforce", {"steps": 100}, 0.05),
    # DPO learns from fixed pairs, not from its own samples: it moves the sampled reward
    # less (+0.03 in 120 steps from this warm start), so its margin is smaller
    ("dpo", {"steps": 120, "pair_prompts": 1000}, 0.02),
])
def test_trainer_improves_reward_in_a_few_steps(task, warm_state, name, kwargs, margin):
    trainer_cls, config_cls = TRAINERS[name]
    policy = warm_policy(warm_state)
    before = sample_accuracy(policy, task)
    trainer_cls(policy, task, config_cls(seed=0, eval_every=0, **kwargs)).train(progress=False)
    after = sample_accuracy(policy, task)
    assert after > before + margin, (name, before, after)


# ------------------------------------------------------------------ determinism ----

@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_same_seed_same_history(task, warm_state, name):
    trainer_cls, config_cls = TRAINERS[name]
    kwargs = {"pair_prompts": 100} if name == "dpo" else {"prompts_per_step": 4}
    runs = []
    for _ in range(2):
        cfg = config_cls(seed=7, steps=3, eval_every=2, **kwargs)
        h = trainer_cls(warm_policy(warm_state), task, cfg).train(progress=False)
        runs.append({k: v for k, v in h.items() if k not in TIMINGS})
    assert runs[0] == runs[1]
    assert len({len(v) for k, v in runs[0].items() if not k.startswith("eval")}) == 1
    cfg = config_cls(seed=8, steps=3, eval_every=2, **kwargs)
    other = trainer_cls(warm_policy(warm_state), task, cfg).train(progress=False)
    assert other["loss"] != runs[0]["loss"]  # a different seed differs


# ----------------------------------------------------------------- bad configs ----

@pytest.mark.parametrize("make, msg", [
    (lambda: GRPOConfig(group_size=1), "group_size"),
    (lambda: GRPOConfig(temperature=0.0), "temperature"),
    (lambda: GRPOConfig(temperature=-1.0), "temperature"),
    (lambda: GRPOConfig(loss_type="ppo"), "loss_type"),
    (lambda: GRPOConfig(scale="std"), "scale"),
    (lambda: GRPOConfig(clip_eps=1.5), "clip_eps"),
    (lambda: GRPOConfig(beta=-0.1), "beta"),
    (lambda: GRPOConfig(mu=0), "mu"),
    (lambda: GRPOConfig(lr=0.0), "lr"),
    (lambda: GRPOConfig(prompts_per_step=0), "prompts_per_step"),
    (lambda: PPOConfig(kl_coef=-1.0), "kl_coef"),
    (lambda: PPOConfig(lam=1.5), "lam"),
    (lambda: ReinforceConfig(group_size=1), "group_size"),
    (lambda: ReinforceConfig(group_size=1, baseline="none", dynamic_sampling=True),
     "one reward never differs"),
    (lambda: ReinforceConfig(baseline="critic"), "baseline"),
    (lambda: DPOConfig(beta=0.0), "beta"),
    (lambda: DPOConfig(pair_samples=1), "pair_samples"),
])
def test_bad_configs_raise_clear_errors(task, make, msg):
    cfg = make()
    trainer_cls = {GRPOConfig: GRPOTrainer, PPOConfig: PPOTrainer,
                   ReinforceConfig: ReinforceTrainer, DPOConfig: DPOTrainer}[type(cfg)]
    with pytest.raises(ValueError, match=msg):
        trainer_cls(TinyGPT(SMALL), task, cfg)


def test_reinforce_without_a_baseline_takes_groups_of_one(task):
    cfg = ReinforceConfig(group_size=1, baseline="none", prompts_per_step=4, steps=1,
                          eval_every=0)
    h = ReinforceTrainer(TinyGPT(SMALL), task, cfg).train(progress=False)
    assert h["samples"] == [4]


def test_empty_task_and_wrong_config_type(task):
    class Empty:
        train: list = []
        max_new_tokens = 4
    with pytest.raises(ValueError, match="empty task"):
        GRPOTrainer(TinyGPT(SMALL), Empty(), GRPOConfig())
    with pytest.raises(ValueError, match="GRPOConfig"):
        GRPOTrainer(TinyGPT(SMALL), task, PPOConfig())


def test_dpo_without_mixed_groups_says_so(task):
    # an untrained model is never right: no (correct, wrong) pair exists
    tr = DPOTrainer(TinyGPT(SMALL), task, DPOConfig(pair_prompts=20, pair_samples=2))
    with pytest.raises(ValueError, match="no preference pair"):
        tr.rollout()


# ---------------------------------------------------------- Hugging Face policy ----

def test_grpo_trainer_runs_on_a_hugging_face_model(task):
    transformers = pytest.importorskip("transformers")
    from course_lib.tasks import EOS_ID, VOCAB
    cfg = transformers.GPT2Config(vocab_size=len(VOCAB), n_positions=16, n_embd=32, n_layer=1,
                                  n_head=2, eos_token_id=EOS_ID, bos_token_id=EOS_ID)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg)
    before = [p.detach().clone() for p in hf.parameters()]
    fmt_task = AdditionTask(seed=0, format_reward=1.0)  # an untrained model earns format reward
    h = GRPOTrainer(hf, fmt_task, GRPOConfig(steps=2, eval_every=0, beta=0.04)).train(
        progress=False)
    assert len(h["loss"]) == 2 and h["samples"][-1] == 2 * 16 * 8
    assert any(not torch.equal(a, b) for a, b in zip(before, hf.parameters(), strict=True))


def _lrs(trainer, n):
    """The learning rate of each of the first n optimiser steps of ``trainer``."""
    out = []
    for _ in range(n):
        out.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.optimizer.step()
        trainer.scheduler.step()
    return out


@pytest.mark.parametrize("schedule, warmup", [("linear", 3), ("linear", 0), ("constant", 4),
                                              ("constant", 0)])
def test_learning_rate_schedule_is_hugging_faces(schedule, warmup):
    """The trainer's schedule equals transformers' get_linear_schedule_with_warmup /
    get_constant_schedule_with_warmup over every optimiser step of the run (GRPO with
    mu = 2 takes 2 per step), and bad names raise."""
    transformers = pytest.importorskip("transformers")
    task = AdditionTask(seed=0)
    cfg = GRPOConfig(steps=5, mu=2, lr=1e-3, warmup_steps=warmup, lr_schedule=schedule)
    trainer = GRPOTrainer(TinyGPT(ModelConfig(n_layer=1, n_embd=16, n_head=2)), task, cfg)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    total = cfg.steps * cfg.mu
    hf = (transformers.get_linear_schedule_with_warmup(opt, warmup, total)
          if schedule == "linear" else transformers.get_constant_schedule_with_warmup(opt, warmup))
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        hf.step()
    assert _lrs(trainer, total) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        GRPOConfig(lr_schedule="cosine").validate()


def test_linear_schedule_counts_every_optimiser_step():
    """GRPO takes mu optimiser steps per step, PPO mu x minibatches: the linear decay
    reaches 0 only at the run's last optimiser step."""
    task = AdditionTask(seed=0)
    policy = TinyGPT(ModelConfig(n_layer=1, n_embd=16, n_head=2), seed=0)
    grpo = GRPOTrainer(policy, task, GRPOConfig(steps=5, mu=2, lr_schedule="linear"))
    ppo = PPOTrainer(policy, task, PPOConfig(steps=5, mu=2, minibatches=2,
                                             lr_schedule="linear"))
    assert grpo.updates_per_step() == 2 and ppo.updates_per_step() == 4
    assert grpo.lr_factor(9) == pytest.approx(0.1) and ppo.lr_factor(19) == pytest.approx(0.05)


# ------------------------------------------------------------------- the batch ----

def test_batch_is_a_dataclass_that_copies_and_selects_rows(task, warm_state):
    tr = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=0, prompts_per_step=2,
                                                               group_size=3))
    batch = fixed_grpo_batch(tr)
    assert len(batch) == 6 and hasattr(batch, "advantages") and not hasattr(batch, "nope")
    assert batch.logprobs is not None and batch.logprobs.requires_grad  # on-policy shortcut
    tr.policy_logprobs(batch)  # takes the graph out (torch cannot deep-copy a graph)
    clone = copy.deepcopy(batch)
    assert torch.equal(clone.tokens, batch.tokens) and clone.tokens is not batch.tokens
    rows = batch.rows(torch.tensor([4, 1]))
    assert rows.prompts == [batch.prompts[4], batch.prompts[1]]
    assert torch.equal(rows.advantages, batch.advantages[[4, 1]])
    assert torch.equal(rows.mask, batch.mask[[4, 1]]) and rows.returns is None


def test_ppo_logs_grad_norms_and_minibatches_cover_the_batch(task, warm_state):
    tr = PPOTrainer(warm_policy(warm_state), task,
                    PPOConfig(seed=0, prompts_per_step=8, mu=2, minibatches=4))
    batch = fixed_grpo_batch(tr)
    parts = list(tr.minibatches(batch))
    assert len(parts) == 8 and all(len(p) == 2 for p in parts)
    assert sorted(sum((p.prompts for p in parts[:4]), [])) == sorted(batch.prompts)
    metrics = tr.update(batch)
    assert metrics["grad_norm"] > 0 and metrics["value_grad_norm"] > 0
    assert metrics["approx_kl"] > 0  # later minibatches see a moved policy


def test_grpo_minibatches_are_the_shared_passes(task, warm_state):
    """GRPO shares PPO's mu passes x M minibatches: one minibatch is the batch itself (no
    random draw, so the history of mu-only runs is unchanged); M > 1 splits every pass anew."""
    cfg = GRPOConfig(seed=0, prompts_per_step=4, group_size=2, mu=3)
    tr = GRPOTrainer(warm_policy(warm_state), task, cfg)
    batch = fixed_grpo_batch(tr)
    state = tr.generator.get_state()
    assert all(part is batch for part in tr.minibatches(batch)) and tr.updates_per_step() == 3
    assert torch.equal(tr.generator.get_state(), state)
    tr = GRPOTrainer(warm_policy(warm_state), task, dataclasses.replace(cfg, minibatches=2))
    batch = fixed_grpo_batch(tr)
    parts = list(tr.minibatches(batch))
    assert len(parts) == 6 == tr.updates_per_step() and all(len(p) == 4 for p in parts)
    for k in range(3):  # each pass covers the batch once
        assert sorted(parts[2 * k].texts + parts[2 * k + 1].texts) == sorted(batch.texts)
    assert tr.update(batch)["approx_kl"] > 0  # later minibatches see a moved policy
    with pytest.raises(ValueError, match="minibatches"):
        GRPOConfig(prompts_per_step=4, minibatches=5).validate()


def test_batch_cat_pads_the_token_fields(task, warm_state):
    tr = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=0, prompts_per_step=2,
                                                               group_size=2))
    a, b = fixed_grpo_batch(tr), fixed_grpo_batch(tr)
    a.tokens, a.mask = a.tokens[:, :1], a.mask[:, :1]  # a shorter batch
    a.old_logprobs, a.entropy, a.logprobs = (v[:, :1] for v in (a.old_logprobs, a.entropy,
                                                                 a.logprobs))
    both = Batch.cat([a, b])
    n = b.tokens.shape[1]
    assert len(both) == 8 and both.prompts == a.prompts + b.prompts and both.group_size == 2
    assert both.tokens.shape == (8, n) and both.logprobs.requires_grad
    assert (both.mask[:4, 1:] == 0).all() and (both.tokens[:4, 1:] == PAD_ID).all()
    assert torch.equal(both.mask[4:], b.mask) and torch.equal(both.rewards[4:], b.rewards)
    b.ref_logprobs = torch.zeros_like(b.mask)
    with pytest.raises(ValueError, match="ref_logprobs"):
        Batch.cat([a, b])


@pytest.mark.parametrize("trainer_cls, config_cls", [(GRPOTrainer, GRPOConfig),
                                                      (ReinforceTrainer, ReinforceConfig)])
def test_dynamic_sampling_keeps_only_groups_with_a_gradient(task, warm_state, trainer_cls,
                                                            config_cls):
    cfg = config_cls(seed=0, prompts_per_step=8, group_size=4, dynamic_sampling=True,
                     max_sampling_rounds=8)
    tr = trainer_cls(warm_policy(warm_state), task, cfg)
    batch = tr.rollout()
    grouped = batch.rewards.view(-1, 4)  # (8, 4)
    assert len(batch) == 32 and (grouped != grouped[:, :1]).any(-1).all()
    assert batch.sampling_rounds > 1  # the warm start has all-wrong and all-right groups
    assert tr.samples_used == 32 * batch.sampling_rounds
    entry = tr.step()
    assert entry["degenerate_frac"] == 0 and entry["sampling_rounds"] >= 1
    # a random policy solves nothing: after max_sampling_rounds it trains on the last round
    rand = trainer_cls(TinyGPT(ModelConfig(n_layer=1, n_embd=16, n_head=2), seed=0), task,
                       dataclasses.replace(cfg, max_sampling_rounds=2))
    last = rand.rollout()
    assert len(last) == 32 and last.sampling_rounds == 2 and rand.samples_used == 64
    assert (last.rewards == last.rewards[0]).all()


def test_reference_log_probs_ignore_top_k(task, warm_state):
    """With top-k sampling a moved policy can sample a token outside the reference's top
    k: its reference log-prob must stay finite (the KL would be inf)."""
    tr = GRPOTrainer(warm_policy(warm_state), task,
                     GRPOConfig(seed=0, steps=3, top_k=2, beta=0.04, lr=1e-2, eval_every=0))
    h = tr.train(progress=False)
    assert all(math.isfinite(x) for x in h["kl_ref"])


# ------------------------------------------------------- prioritized prompt sampling ----
def test_prioritized_sampling_draws_distinct_prompts_weighted_to_failures(task, warm_state):
    """Kimi k1.5's prioritized sampling: weight max(1 - s_i, floor); unseen prompts weight 1."""
    cfg = GRPOConfig(steps=1, prompts_per_step=16, eval_every=0, prompt_sampling="prioritized",
                     priority_floor=0.2)
    t = GRPOTrainer(warm_policy(warm_state), task, cfg)
    assert torch.equal(t.prompt_weights(), torch.ones(len(task.train)))
    t.train(progress=False)
    seen = ~t.success.isnan()
    assert int(seen.sum()) == 16  # one group per prompt, distinct prompts
    w = t.prompt_weights()
    assert torch.allclose(w[seen], (1 - t.success[seen]).clamp(min=0.2))
    assert 0 <= t.history["train_unsolved"][0] <= 1
    # every prompt solved but the first 16: they get 1 / (1 + 0.2 * (T - 16) / 16) of draws
    t.success[:] = 1.0
    t.success[:16] = 0.0
    drawn = [p for _ in range(50) for p in t.next_prompts(16)]
    share = sum(p in set(task.train[:16]) for p in drawn) / len(drawn)
    expected = 16 / (16 + 0.2 * (len(task.train) - 16))
    assert abs(share - expected) < 0.05 and all(len(set(drawn[i:i + 16])) == 16
                                                 for i in range(0, len(drawn), 16))


def test_uniform_sampling_is_unchanged_by_the_option(task, warm_state):
    a = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=3))
    b = GRPOTrainer(warm_policy(warm_state), task, GRPOConfig(seed=3, priority_floor=0.5))
    assert a.next_prompts(40) == b.next_prompts(40)


def test_prioritized_sampling_needs_enough_prompts(warm_state):
    small = AdditionTask(seed=0, n_train=8, n_test=10)
    with pytest.raises(ValueError, match="distinct prompts per step"):
        GRPOTrainer(warm_policy(warm_state), small,
                    GRPOConfig(prompts_per_step=16, prompt_sampling="prioritized"))
    with pytest.raises(ValueError, match="priority_floor"):
        GRPOConfig(priority_floor=1.5).validate()


def test_prioritized_sampling_with_one_completion_per_prompt(task, warm_state):
    """PPO (one completion per prompt) keeps s_i as that completion's 0/1 verdict."""
    cfg = PPOConfig(steps=1, prompts_per_step=16, eval_every=0, kl_coef=0.0,
                    prompt_sampling="prioritized")
    t = PPOTrainer(warm_policy(warm_state), task, cfg)
    t.train(progress=False)
    seen = ~t.success.isnan()
    assert int(seen.sum()) == 16 and set(t.success[seen].tolist()) <= {0.0, 1.0}
    assert t.history["train_unsolved"][0] == float((t.success[seen] == 0).float().mean())


# ------------------------------------------------------------------ the skeleton ----

#: what each trainer's own class may define: the pieces of the skeleton (base.py's table)
#: and, for PPO, its critic; everything else is the base class's, written once
PIECES = {"config_cls", "rollout", "compute_targets", "loss", "holds_reference"}
OWN = {"grpo": PIECES, "reinforce": PIECES, "ppo": PIECES | {"__init__", "values"},
       "dpo": PIECES | {"__init__", "build_pairs", "_sequence_logps", "score",
                        "rollout_metrics"}}


@pytest.mark.parametrize("name", sorted(OWN))
def test_trainers_define_only_their_pieces(name):
    """The diff between two trainers is their algorithm: no trainer re-implements the
    shared plumbing (update, optimiser step, minibatches, logging, evaluation)."""
    trainer_cls, _ = TRAINERS[name]
    own = {k for k, v in vars(trainer_cls).items()
           if callable(v) or isinstance(v, (staticmethod, classmethod, property))}
    assert own <= OWN[name], f"{trainer_cls.__name__} also defines {sorted(own - OWN[name])}"


def test_each_default_is_written_once():
    """A config re-declares an inherited field only to give it its own default: not the
    base's value again, and not a value another config also re-declares (then it belongs
    in the base). Each default then has one place to update."""
    classes = {c for _, config_cls in TRAINERS.values() for c in config_cls.__mro__
               if dataclasses.is_dataclass(c)}
    overrides = {}  # (field, value) -> classes that re-declare the field with that value
    for cls in classes:
        own = vars(cls).get("__annotations__", {})
        for base in cls.__mro__[1:]:
            for f in set(own) & set(vars(base).get("__annotations__", {})):
                value = getattr(cls, f)
                assert value != getattr(base, f), (
                    f"{cls.__name__}.{f} repeats the default of {base.__name__}.{f}")
                overrides.setdefault((f, value), set()).add(cls.__name__)
    repeated = {k: sorted(v) for k, v in overrides.items() if len(v) > 1}
    assert not repeated, f"the same default re-declared in several configs: {repeated}"

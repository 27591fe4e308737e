"""course_lib.trl_bridge: the course's task/model/config on TRL, and course_lib.grpo_loss == TRL.

The central test (``test_grpo_loss_equals_trl``) feeds one fixed batch (prompt and completion
ids, masks, old log-probs, advantages, reference log-probs) to TRL's own
``GRPOTrainer.compute_loss`` and to ``course_lib.grpo_loss`` with the log-probs computed by
``course_lib.model.completion_logprobs``, and asserts equal losses and equal gradients for
loss_type "grpo", "dapo" and "dr_grpo", with and without the KL term. The batch is built so
that the aggregations, the clip and the KL all matter: ``test_equivalence_can_fail`` shows
that a wrong aggregation, a missing clip or TRL's own default KL correction are detected.
"""

import dataclasses
import math

import pytest
import torch

from course_lib import grpo_loss, recipes
from course_lib.model import ModelConfig, TinyGPT, completion_logprobs, forward_logits, sample
from course_lib.tasks import EOS_ID, VOCAB, AdditionTask
from course_lib.trainers.grpo import GRPOConfig, GRPOTrainer

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
from course_lib import trl_bridge as tb  # noqa: E402

transformers.utils.logging.set_verbosity_error()  # "pass an attention_mask" etc.

TOL = 1e-5
MAX_NEW = 6  # TRL's max_completion_length > the batch's T = 4: dr_grpo must use 6, not T


@pytest.fixture(scope="module")
def task():
    return AdditionTask(seed=0)


@pytest.fixture(scope="module")
def batch(task):
    """8 completions (two groups of 4) of lengths 1..4, right-padded; random advantages of
    both signs; old and reference log-probs that differ from the current ones enough that
    some ratios leave [0.8, 1.28] (the clip acts) and the KL is far from 0."""
    g = torch.Generator().manual_seed(0)
    B, T = 8, 4
    prompts = [p for p in AdditionTask(seed=0).train[:2] for _ in range(4)]
    lengths = torch.tensor([1, 2, 3, 4, 4, 3, 2, 1])
    comp = torch.randint(1, 11, (B, T), generator=g)  # digits
    for i, n in enumerate(lengths.tolist()):
        if n < T:
            comp[i, n - 1] = EOS_ID  # ends with EOS ...
            comp[i, n:] = EOS_ID  # ... then padding (EOS id, masked)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # (B, T)
    return {
        "prompt_ids": task.encode_prompts(prompts),  # (B, 6)
        "completion_ids": comp,  # (B, T)
        "mask": mask,
        "advantages": torch.randn(B, generator=g),  # (B,)
        "old_noise": 0.3 * torch.randn(B, T, generator=g),
        "ref_noise": 0.5 * torch.randn(B, T, generator=g),
    }


def _course_cfg(loss_type="grpo", beta=0.0, clip_eps_high=None, **kw):
    return GRPOConfig(prompts_per_step=2, group_size=4, loss_type=loss_type, beta=beta,
                      clip_eps=0.2, clip_eps_high=clip_eps_high, max_new_tokens=MAX_NEW,
                      lr=1e-4, steps=1, seed=0, **kw)


def _both_losses(task, batch, cfg, tmp_path, **trl_overrides):
    """(course loss, stats, TRL loss, course grads, TRL grads) on the fixed batch, one model.
    Losses are returned detached (floats are compared)."""
    trainer = tb.make_trl_trainer(tb.build_model(seed=0), task, cfg,
                                  output_dir=str(tmp_path), **trl_overrides)
    model = trainer.model
    model.train()
    m = batch["mask"]
    # the course side: log-probs from course_lib.model, loss from course_lib.grpo_loss
    logp = completion_logprobs(model, batch["prompt_ids"], batch["completion_ids"], m)
    old = (logp.detach() + batch["old_noise"]) * m  # (B, T) pi_old != pi_theta
    ref = (logp.detach() + batch["ref_noise"]) * m if cfg.beta > 0 else None
    ours, stats = grpo_loss(logp, old, batch["advantages"], m, ref, clip_eps=cfg.clip_eps,
                            clip_eps_high=cfg.clip_eps_high, beta=cfg.beta,
                            loss_type=cfg.loss_type, max_len=cfg.max_new_tokens,
                            kl_ratio_weight=cfg.kl_ratio_weight)
    model.zero_grad()
    ours.backward()
    g_ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # the TRL side: the trainer's own compute_loss on the prepared inputs
    theirs = tb.trl_loss(trainer, batch["prompt_ids"], batch["completion_ids"], m, old,
                         batch["advantages"], ref)
    theirs.backward()
    g_theirs = {n: p.grad.clone() for n, p in model.named_parameters()}
    return ours.detach(), stats, theirs.detach(), g_ours, g_theirs


def _max_grad_diff(a, b):
    return max(float((a[n] - b[n]).abs().max()) for n in a)


# ---------------------------------------------------------------- equivalence ----------
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_grpo_loss_equals_trl(task, batch, tmp_path, loss_type, beta):
    cfg = _course_cfg(loss_type, beta)
    ours, stats, theirs, g_ours, g_theirs = _both_losses(task, batch, cfg, tmp_path)
    assert stats["clip_frac"] > 0, "the batch must exercise the clip"
    assert abs(float(ours) - float(theirs)) < TOL, (loss_type, beta, float(ours), float(theirs))
    assert _max_grad_diff(g_ours, g_theirs) < TOL
    assert max(float(g.abs().max()) for g in g_ours.values()) > 1e-3  # gradients are not ~0


def test_grpo_loss_equals_trl_clip_higher(task, batch, tmp_path):
    """DAPO's asymmetric clip (eps_low 0.2, eps_high 0.28) maps to epsilon / epsilon_high."""
    cfg = _course_cfg("dapo", 0.0, clip_eps_high=0.28)
    ours, _, theirs, g_ours, g_theirs = _both_losses(task, batch, cfg, tmp_path)
    assert abs(float(ours) - float(theirs)) < TOL
    assert _max_grad_diff(g_ours, g_theirs) < TOL
    sym, _, _, _, _ = _both_losses(task, batch, _course_cfg("dapo", 0.0), tmp_path)
    assert abs(float(sym) - float(ours)) > 1e-4  # eps_high matters on this batch


def test_equivalence_can_fail(task, batch, tmp_path):
    """Deliberately wrong variants of the loss are far outside the tolerance."""
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        _, _, theirs, _, _ = _both_losses(task, batch, _course_cfg(loss_type), tmp_path)
        m = batch["mask"]
        # the same weights as the trainer's model (build_model is deterministic)
        logp = completion_logprobs(tb.build_model(seed=0), batch["prompt_ids"],
                                   batch["completion_ids"], m)
        old = (logp.detach() + batch["old_noise"]) * m
        adv = batch["advantages"]
        # 1. every other aggregation of the same per-token losses
        for other in {"grpo", "dapo", "dr_grpo"} - {loss_type}:
            wrong, _ = grpo_loss(logp, old, adv, m, beta=0.0, loss_type=other, max_len=MAX_NEW)
            assert abs(float(wrong) - float(theirs)) > 1e-3, (loss_type, other)
        # 2. dr_grpo normalised by the padded length T instead of max_completion_length
        if loss_type == "dr_grpo":
            wrong, _ = grpo_loss(logp, old, adv, m, beta=0.0, loss_type="dr_grpo")
            assert abs(float(wrong) - float(theirs)) > 1e-3
        # 3. a mean over all B*T entries, padding included
        per_tok, _ = grpo_loss(logp, old, adv, torch.ones_like(m), beta=0.0, loss_type="dapo")
        assert abs(float(per_tok) - float(theirs)) > 1e-3
        # 4. no clipping
        noclip, _ = grpo_loss(logp, old, adv, m, clip_eps=0.99, beta=0.0, loss_type=loss_type,
                              max_len=MAX_NEW)
        assert abs(float(noclip) - float(theirs)) > 1e-4


def test_trl_default_kl_correction_differs(task, batch, tmp_path):
    """TRL's default ``use_bias_correction_kl=True`` (KL x ratio, DeepSeek-V3.2) is not
    DeepSeekMath's loss: the bridge turns it off, and with it on the test would fail."""
    cfg = _course_cfg("grpo", 0.04)
    ours, _, theirs, g_ours, g_theirs = _both_losses(task, batch, cfg, tmp_path,
                                                     use_bias_correction_kl=True)
    assert abs(float(ours) - float(theirs)) > TOL
    assert _max_grad_diff(g_ours, g_theirs) > 100 * TOL


def test_ratio_weighted_kl_equals_trls_bias_correction(task, batch, tmp_path):
    """``kl_ratio_weight`` maps to TRL's ``use_bias_correction_kl`` (k3 x ratio)."""
    cfg = _course_cfg("grpo", 0.04, kl_ratio_weight=True)
    assert tb.to_trl_config(cfg, task=task, output_dir=str(tmp_path)).use_bias_correction_kl
    ours, _, theirs, g_ours, g_theirs = _both_losses(task, batch, cfg, tmp_path)
    assert abs(float(ours) - float(theirs)) < TOL
    assert _max_grad_diff(g_ours, g_theirs) < TOL
    _, _, _, g_plain, _ = _both_losses(task, batch, _course_cfg("grpo", 0.04), tmp_path)
    assert _max_grad_diff(g_plain, g_ours) > 100 * TOL  # the weighting matters here


def test_ratio_weighted_kl_has_the_reverse_kl_gradient():
    """Over a whole vocabulary weighted by pi_old (the exact expectation over samples from
    pi_old), the ratio-weighted k3 term has exactly the gradient of KL(pi_theta || pi_ref);
    the plain k3 term has the gradient of KL(pi_ref || pi_theta) at pi_theta = pi_old."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(1, 5, generator=g, requires_grad=True)  # logits of pi_theta
    ref = torch.log_softmax(torch.randn(1, 5, generator=g), -1)  # (1, V)

    def expected_kl_term(weighted):  # sum_v pi_old(v) * loss(v), one token per vocabulary entry
        logp = torch.log_softmax(theta, -1)  # (1, V)
        old = logp.detach()  # pi_old = pi_theta now (mu = 1)
        per_token = []
        for v in range(5):
            loss, _ = grpo_loss(logp[:, v:v + 1], old[:, v:v + 1], torch.zeros(1), beta=1.0,
                                ref_logprobs=ref[:, v:v + 1], kl_ratio_weight=weighted)
            per_token.append(old[0, v].exp() * loss)
        return torch.stack(per_token).sum()

    def grad(f):
        (out,) = torch.autograd.grad(f(), theta)
        return out

    logp = lambda: torch.log_softmax(theta, -1)  # noqa: E731
    reverse = grad(lambda: (logp().exp() * (logp() - ref)).sum())  # KL(pi_theta || pi_ref)
    forward = grad(lambda: (ref.exp() * (ref - logp())).sum())  # KL(pi_ref || pi_theta)
    torch.testing.assert_close(grad(lambda: expected_kl_term(True)), reverse)
    torch.testing.assert_close(grad(lambda: expected_kl_term(False)), forward)
    assert (reverse - forward).abs().max() > 1e-2  # the two differ here


def test_trl_loss_rejects_bad_batches(task, batch, tmp_path):
    trainer = tb.make_trl_trainer(tb.build_model(seed=0), task, _course_cfg(),
                                  output_dir=str(tmp_path))
    b, m = batch, batch["mask"]
    with pytest.raises(ValueError, match="advantages"):
        tb.trl_loss(trainer, b["prompt_ids"], b["completion_ids"], m, m, b["advantages"][:3])
    with pytest.raises(ValueError, match="old_logprobs"):
        tb.trl_loss(trainer, b["prompt_ids"], b["completion_ids"], m, m[:, :2], b["advantages"])
    with pytest.raises(ValueError, match="ref_logprobs"):  # beta = 0 but ref given
        tb.trl_loss(trainer, b["prompt_ids"], b["completion_ids"], m, m, b["advantages"], m)


# ------------------------------------------------------------ tokenizer, model ---------
def test_tokenizer_has_the_course_ids(task):
    tok = tb.build_tokenizer()
    assert tok.eos_token_id == EOS_ID and tok.pad_token_id == EOS_ID
    assert len(tok) == len(VOCAB)
    for text in task.train[:50] + ["45$", "0123456789+=;$"]:
        assert tok(text)["input_ids"] == task.encode(text).tolist(), text
    assert tok.decode(task.encode("45$").tolist()) == "45$"
    assert tok.decode(task.encode("45$").tolist(), skip_special_tokens=True) == "45"


def test_tokenizer_rejects_bad_vocab():
    with pytest.raises(ValueError, match="repeated"):
        tb.build_tokenizer("$00")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tb.build_tokenizer("0123", eos="$")


def test_to_hf_computes_the_same_function():
    """minGPT-style check: the converted GPT-2 gives TinyGPT's logits and samples."""
    tiny = TinyGPT(ModelConfig(n_layer=2, n_embd=32, n_head=2, block_size=16), seed=1)
    with torch.no_grad():  # move away from the init so that every weight matters
        for p in tiny.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    hf = tb.to_hf(tiny)
    ids = torch.randint(0, len(VOCAB), (5, 12), generator=torch.Generator().manual_seed(0))
    a, b = forward_logits(tiny, ids), forward_logits(hf, ids)
    assert a.abs().max() > 0.5
    assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    prompts = ids[:, :6]
    s1 = sample(tiny, prompts, 4, generator=torch.Generator().manual_seed(3))
    s2 = sample(hf, prompts, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1.tokens, s2.tokens)
    assert torch.allclose(s1.logprobs, s2.logprobs, atol=1e-5)


def test_to_hf_wrong_mapping_is_detected():
    """The logits check above can fail: a transposition missed in one layer changes them."""
    tiny = TinyGPT(ModelConfig(n_layer=1, n_embd=32, n_head=2, block_size=16), seed=1)
    hf = tb.to_hf(tiny)
    with torch.no_grad():
        w = hf.transformer.h[0].mlp.c_fc.weight  # (32, 128): not square, so swap halves
        w.copy_(torch.roll(w, 1, dims=1))
    ids = torch.randint(0, len(VOCAB), (3, 8), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(forward_logits(tiny, ids), forward_logits(hf, ids), atol=1e-5)


def test_to_hf_rejects_other_models():
    with pytest.raises(ValueError, match="TinyGPT"):
        tb.to_hf(torch.nn.Linear(2, 2))


def test_build_model_is_the_specified_gpt2_and_deterministic():
    m1, m2 = tb.build_model(seed=0), tb.build_model(seed=0)
    assert isinstance(m1, transformers.GPT2LMHeadModel)
    c = m1.config
    assert (c.n_layer, c.n_embd, c.vocab_size, c.eos_token_id) == (2, 128, len(VOCAB), EOS_ID)
    assert c.resid_pdrop == c.embd_pdrop == c.attn_pdrop == 0.0
    for (n, p), q in zip(m1.named_parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q), n
    m3 = tb.build_model(seed=1)
    assert not torch.equal(m1.lm_head.weight, m3.lm_head.weight)


# ----------------------------------------------------------------- data, reward --------
def test_warm_start_hf_is_about_30_percent_and_uses_its_own_sft_recipe():
    # issue 7: "a supervised warm start at about 30% greedy held-out accuracy"
    from course_lib.evaluate import evaluate

    task = AdditionTask(seed=0)
    model = tb.warm_start_hf(task, seed=0)
    assert 0.25 <= evaluate(model, task, split="test") <= 0.35
    sft = recipes.sft_config()
    assert (sft.lr, sft.check_every) == (1e-3, 2)
    assert model.warm_start_info["steps"] < 300  # lr 3e-3 needed 660 steps on this model


def test_dataset_and_reward_function(task):
    ds = tb.build_dataset(task, "train")
    assert len(ds) == len(task.train) and ds.column_names == ["prompt", "answer"]
    assert ds[0]["prompt"] == task.train[0] and ds[0]["answer"] == task.answer(task.train[0])
    assert len(tb.build_dataset(task, "test")) == len(task.test)
    reward = tb.make_reward_func(task)
    p = "07+38="
    ids = [task.encode(c).tolist() for c in ("45$", "44$", "4$", "450$")]
    texts = ["45", "44", "4", "450"]  # what TRL decodes (EOS skipped)
    got = reward(prompts=[p] * 4, completions=texts, completion_ids=ids, answer=["45"] * 4)
    assert got == [1.0, 0.0, 0.0, 0.0]
    assert got == [task.reward(p, task.decode(i)) for i in ids]
    assert reward(prompts=[p], completions=["45"]) == [1.0]  # text only


# ------------------------------------------------------------------- config map --------
def test_to_trl_config_maps_every_field(task):
    cfg = GRPOConfig(steps=7, prompts_per_step=16, group_size=8, lr=3e-4, mu=2,
                     clip_eps=0.1, clip_eps_high=0.28, beta=0.02, loss_type="dr_grpo",
                     scale="none", temperature=0.9, top_k=5, grad_clip=0.5, seed=3)
    a = tb.to_trl_config(cfg, task=task, output_dir="unused")
    assert (a.loss_type, a.scale_rewards, a.beta) == ("dr_grpo", "none", 0.02)
    assert (a.epsilon, a.epsilon_high) == (0.1, 0.28)
    assert (a.num_generations, a.per_device_train_batch_size) == (8, 128)
    assert (a.num_iterations, a.max_steps, a.gradient_accumulation_steps) == (2, 14, 1)
    assert math.isclose(a.learning_rate, 3e-4)
    assert a.lr_scheduler_type == "constant_with_warmup"  # HF's "constant" has no warm-up
    assert (a.max_completion_length, a.temperature, a.top_k) == (task.max_new_tokens, 0.9, 5)
    assert (a.max_grad_norm, a.seed) == (0.5, 3)
    assert a.use_bias_correction_kl is False
    # what CPU needs instead of TRL's defaults
    assert a.bf16 is False and a.use_cpu is True
    assert a.gradient_checkpointing is False and a.activation_checkpointing is False
    assert a.report_to == [] or a.report_to == "none" or a.report_to == ["none"]
    # TRL's defaults that the mapping overrides
    d = trl.GRPOConfig(output_dir="unused", use_cpu=True)
    assert (d.loss_type, d.beta, d.learning_rate, d.bf16) == ("dapo", 0.0, 1e-6, True)
    assert d.use_bias_correction_kl is True
    # two processes: each gets half of the completions
    two = tb.to_trl_config(cfg, task=task, output_dir="unused", num_processes=2)
    assert two.per_device_train_batch_size == 64
    assert a.steps_per_generation == two.steps_per_generation == 1
    # M minibatches: M optimizer steps per generated batch, each on 1/M of it
    m_cfg = dataclasses.replace(cfg, mu=1, minibatches=4)
    m = tb.to_trl_config(m_cfg, task=task, output_dir="unused")
    assert (m.per_device_train_batch_size, m.steps_per_generation) == (32, 4)
    assert (m.generation_batch_size, m.max_steps, m.gradient_accumulation_steps) == (128, 28, 1)
    m2 = tb.to_trl_config(m_cfg, task=task, output_dir="unused", num_processes=2)
    assert (m2.per_device_train_batch_size, m2.steps_per_generation) == (16, 4)


@pytest.mark.parametrize("schedule, mu, minibatches", [("constant", 2, 1), ("linear", 2, 1),
                                                       ("linear", 1, 2)])
def test_to_trl_config_maps_the_warmup_schedule(task, tmp_path, schedule, mu, minibatches):
    """TRL's learning rate at each optimizer step equals the course trainer's, warm-up
    included (both count optimizer steps: steps x mu x minibatches)."""
    cfg = GRPOConfig(steps=4, mu=mu, minibatches=minibatches, lr=1e-3, warmup_steps=3,
                     lr_schedule=schedule, prompts_per_step=2, group_size=4, max_new_tokens=4)
    trainer = tb.make_trl_trainer(tb.build_model(seed=0), task, cfg, output_dir=str(tmp_path))
    trainer.create_optimizer_and_scheduler(num_training_steps=trainer.args.max_steps)
    course = GRPOTrainer(tb.build_model(seed=0), task, cfg)
    ours, theirs = [], []
    assert trainer.args.max_steps == cfg.steps * course.updates_per_step() == 8
    for _ in range(trainer.args.max_steps):
        for lrs, opt, sched in ((ours, course.optimizer, course.scheduler),
                                (theirs, trainer.optimizer, trainer.lr_scheduler)):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert theirs[0] == 0.0 and max(theirs) == pytest.approx(1e-3)
    assert (theirs[-1] < 1e-3) == (schedule == "linear")


def test_to_trl_config_rejects_bad_input(task):
    with pytest.raises(ValueError, match="split evenly"):
        tb.to_trl_config(GRPOConfig(prompts_per_step=3, group_size=3), task=task,
                         num_processes=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tb.to_trl_config(GRPOConfig(), task=None)
    with pytest.raises(ValueError, match="GRPOConfig"):
        tb.to_trl_config({"lr": 1e-3}, task=task)
    with pytest.raises(ValueError, match="no TRL field"):  # TRL samples prompts uniformly
        tb.to_trl_config(recipes.grpo_config(), task=task)
    with pytest.raises(ValueError, match="minibatches=2 with mu=2 is not mapped"):
        tb.to_trl_config(GRPOConfig(minibatches=2, mu=2), task=task)
    with pytest.raises(ValueError, match="loss_type='dapo' is not mapped"):
        tb.to_trl_config(GRPOConfig(minibatches=2, loss_type="dapo"), task=task)
    with pytest.raises(ValueError, match="x 3 minibatches"):
        tb.to_trl_config(GRPOConfig(prompts_per_step=4, group_size=2, minibatches=3), task=task)
    with pytest.raises(ValueError, match="dynamic_sampling has no TRL"):
        tb.to_trl_config(GRPOConfig(dynamic_sampling=True), task=task)


# ---------------------------------------------------- both trainers run on one model ---
@pytest.fixture(scope="module")
def format_task():
    """A random model never gets an answer right (all rewards 0, no gradient); with a format
    reward about a quarter of its 4-token completions (all digits) earn something."""
    return AdditionTask(seed=0, n_test=20, format_reward=1.0)  # small held-out split: fast


def test_course_trainer_accepts_the_hf_model(format_task):
    """course_lib's GRPOTrainer trains the Hugging Face GPT-2 through forward_logits."""
    task = format_task
    model = tb.build_model(seed=0, n_embd=32, n_head=2)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, lr=1e-3, eval_every=0,
                     beta=0.04, seed=0)
    trainer = GRPOTrainer(model, task, cfg)
    hist = trainer.train(progress=False)
    assert hist["step"] == [1, 2] and len(hist["eval_accuracy"]) == 2
    assert all(math.isfinite(x) for x in hist["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_trl_trainer_trains_on_the_course_task(format_task, tmp_path):
    task = format_task
    model = tb.build_model(seed=0, n_embd=32, n_head=2)
    before = model.lm_head.weight.detach().clone()
    cfg = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, lr=1e-3, seed=0)
    trainer = tb.make_trl_trainer(model, task, cfg, output_dir=str(tmp_path))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logs) == 2 and all(0.0 <= h["reward"] <= 2.0 for h in logs)
    assert logs[0]["reward"] > 0
    assert trainer.state.global_step == 2
    assert not torch.equal(before, model.lm_head.weight)


def test_trl_trainer_takes_one_optimizer_step_per_minibatch(format_task, tmp_path):
    """minibatches=2: TRL generates once per course step and steps the optimizer twice, each
    time on half of the generated completions (as GRPOTrainer.minibatches)."""
    cfg = GRPOConfig(steps=2, prompts_per_step=2, group_size=4, minibatches=2, lr=1e-3, seed=0)
    trainer = tb.make_trl_trainer(tb.build_model(seed=0, n_embd=32, n_head=2), format_task,
                                  cfg, output_dir=str(tmp_path))
    sizes, generate = [], trainer._generate_and_score_completions

    def counted(inputs):
        out = generate(inputs)
        sizes.append(len(out["completion_ids"]))
        return out

    trainer._generate_and_score_completions = counted
    steps = []
    real_loss = trainer.compute_loss
    trainer.compute_loss = lambda model, inputs, *a, **k: (
        steps.append(len(inputs["completion_ids"])) or real_loss(model, inputs, *a, **k))
    trainer.train()
    assert sizes == [8, 8]  # one generation of 2 prompts x 4 per course step
    assert steps == [4, 4, 4, 4] and trainer.state.global_step == 4

"""Tests of course_lib.model: TinyGPT shapes, sampling masks and log-probs, HF compatibility."""

import math

import pytest
import torch

from course_lib.model import (
    ModelConfig,
    TinyGPT,
    ValueModel,
    completion_logprobs,
    forward_logits,
    sample,
)
from course_lib.tasks import EOS_ID, PAD_ID, VOCAB, AdditionTask


@pytest.fixture(scope="module")
def model():
    return TinyGPT(ModelConfig(block_size=16, n_layer=1, n_embd=32, n_head=2), seed=0)


@pytest.fixture(scope="module")
def prompts():
    t = AdditionTask(seed=0)
    return t.encode_prompts(t.train[:24])  # (24, 6)


def test_forward_shapes_and_causality(model):
    ids = torch.randint(0, len(VOCAB), (3, 10))
    logits = forward_logits(model, ids)
    assert logits.shape == (3, 10, len(VOCAB))
    ids2 = ids.clone()
    ids2[:, 7:] = (ids2[:, 7:] + 1) % len(VOCAB)  # change the future only
    assert torch.allclose(forward_logits(model, ids2)[:, :7], logits[:, :7], atol=1e-6)
    assert not torch.allclose(forward_logits(model, ids2)[:, 7:], logits[:, 7:])


def test_same_seed_same_init_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = TinyGPT(ModelConfig(), seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # building a model does not consume the global RNG
    b = TinyGPT(ModelConfig(), seed=5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_sample_shapes_and_mask_after_eos(model, prompts):
    out = sample(model, prompts, max_new_tokens=5, temperature=1.5,
                 generator=torch.Generator().manual_seed(0))
    B, N = out.tokens.shape
    assert B == 24 and 1 <= N <= 5
    assert out.logprobs.shape == out.mask.shape == out.entropy.shape == (B, N)
    for b in range(B):
        toks, m = out.tokens[b].tolist(), out.mask[b].tolist()
        n_real = int(sum(m))
        assert m == [1.0] * n_real + [0.0] * (N - n_real)  # 1s then 0s
        if EOS_ID in toks[:n_real]:
            assert toks.index(EOS_ID) == n_real - 1  # the mask ends with the first EOS
        else:
            assert n_real == N == 5  # ran out of budget
        assert all(t == PAD_ID for t in toks[n_real:])
    assert (out.logprobs[out.mask == 0] == 0).all()
    assert (out.logprobs[out.mask == 1] <= 0).all()


@pytest.mark.parametrize("temperature, top_k, greedy", [(1.0, None, False), (0.7, None, False),
                                                    (1.3, 4, False), (1.0, None, True)])
def test_sample_records_the_entropy_of_each_sampling_distribution(model, prompts, temperature,
                                                                   top_k, greedy):
    """Entropy per position = -sum_v p_v log p_v of the distribution the token was drawn
    from (temperature and top-k applied; greedy: temperature 1), recomputed here from one
    full forward pass; 0 on padding; with top-k at most log k."""
    out = sample(model, prompts, max_new_tokens=4, temperature=temperature, top_k=top_k,
                 greedy=greedy, generator=torch.Generator().manual_seed(2))
    seq = torch.cat([prompts, out.tokens], dim=1)[:, :-1]
    logits = forward_logits(model, seq)[:, prompts.shape[1] - 1:] / temperature  # (B, N, V)
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    p = torch.softmax(logits, -1)
    expected = -(p * torch.log(p.clamp(min=1e-30))).sum(-1) * out.mask  # (B, N)
    torch.testing.assert_close(out.entropy, expected, atol=1e-5, rtol=1e-5)
    assert (out.entropy[out.mask == 0] == 0).all() and (out.entropy[out.mask == 1] > 0).all()
    if top_k is not None:
        assert out.entropy.max() <= math.log(top_k) + 1e-6


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.7, None), (1.3, 4)])
def test_completion_logprobs_equal_sampling_logprobs(model, prompts, temperature, top_k):
    out = sample(model, prompts, max_new_tokens=4, temperature=temperature, top_k=top_k,
                 generator=torch.Generator().manual_seed(1))
    lp = completion_logprobs(model, prompts, out.tokens, out.mask, temperature=temperature,
                             top_k=top_k)
    assert lp.shape == out.tokens.shape
    torch.testing.assert_close(lp, out.logprobs, atol=1e-5, rtol=0)
    # and a wrong temperature gives different numbers (the test can fail)
    lp_wrong = completion_logprobs(model, prompts, out.tokens, out.mask,
                                   temperature=2 * temperature)
    assert not torch.allclose(lp_wrong, out.logprobs, atol=1e-3)


def test_completion_logprobs_has_gradient(model, prompts):
    comp = torch.full((prompts.shape[0], 3), 3)
    lp = completion_logprobs(model, prompts, comp)
    lp.sum().backward()
    assert model.head.weight.grad is not None
    model.zero_grad()


def test_top_k_one_is_greedy(model, prompts):
    a = sample(model, prompts, 4, top_k=1, generator=torch.Generator().manual_seed(0))
    g = sample(model, prompts, 4, greedy=True)
    assert torch.equal(a.tokens, g.tokens)
    assert torch.allclose(a.logprobs, torch.zeros_like(a.logprobs))  # prob 1 after top-1


def test_sampling_is_reproducible_with_generator(model, prompts):
    a = sample(model, prompts, 4, generator=torch.Generator().manual_seed(7))
    b = sample(model, prompts, 4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)


@pytest.mark.parametrize("kwargs, msg", [
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_sample_bad_args(model, prompts, kwargs, msg):
    args = {"max_new_tokens": 3} | kwargs
    with pytest.raises(ValueError, match=msg):
        sample(model, prompts, **args)


def test_bad_model_config():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer"):
        ModelConfig(n_layer=0)
    with pytest.raises(ValueError, match="block_size"):
        TinyGPT(ModelConfig(block_size=4))(torch.zeros(1, 5, dtype=torch.long))


def test_value_model_from_policy(model):
    critic = ValueModel.from_policy(model)
    ids = torch.randint(0, len(VOCAB), (2, 7))
    assert critic(ids).shape == (2, 7)
    assert torch.equal(critic.body.tok_emb.weight, model.tok_emb.weight)
    assert critic.body.tok_emb.weight.data_ptr() != model.tok_emb.weight.data_ptr()  # a copy


def test_forward_logits_and_sampling_with_a_hugging_face_model(prompts):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=len(VOCAB), n_positions=16, n_embd=32, n_layer=1,
                                  n_head=2, eos_token_id=EOS_ID, bos_token_id=EOS_ID)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    logits = forward_logits(hf, prompts)
    assert logits.shape == (prompts.shape[0], prompts.shape[1], len(VOCAB))
    out = sample(hf, prompts, 4, generator=torch.Generator().manual_seed(0))
    lp = completion_logprobs(hf, prompts, out.tokens, out.mask)
    torch.testing.assert_close(lp, out.logprobs, atol=1e-5, rtol=0)


class _NoCache(torch.nn.Module):
    """A causal LM that only knows full forwards (sample must fall back to re-reading)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids):
        return self.inner(ids)


def _sampled_with_and_without_cache(model, prompts, **kwargs):
    cached = sample(model, prompts, 5, generator=torch.Generator().manual_seed(3), **kwargs)
    full = sample(_NoCache(model), prompts, 5, generator=torch.Generator().manual_seed(3),
                  **kwargs)
    return cached, full


@pytest.mark.parametrize("kind", ["tinygpt", "gpt2"])
@pytest.mark.parametrize("kwargs", [{}, {"greedy": True}, {"temperature": 0.7, "top_k": 3}])
def test_kv_cache_sampling_equals_rereading_the_whole_sequence(model, prompts, kind, kwargs):
    """The KV cache (with identical prompts read once and shared, as in GRPO's groups)
    changes nothing but rounding: same tokens, log-probs within float32 error."""
    policy = model
    if kind == "gpt2":
        pytest.importorskip("transformers")
        from course_lib.trl_bridge import to_hf

        policy = to_hf(model)
    grouped = prompts[:6].repeat_interleave(4, dim=0)  # (24, 6): 6 prompts x 4 each
    for batch in (prompts, grouped):
        cached, full = _sampled_with_and_without_cache(policy, batch, **kwargs)
        assert torch.equal(cached.tokens, full.tokens)
        assert torch.equal(cached.mask, full.mask)
        torch.testing.assert_close(cached.logprobs, full.logprobs, atol=1e-5, rtol=0)


def test_kv_cache_respects_block_size(model, prompts):
    """Cached positions count towards block_size (16): 6 prompt tokens + 10 more fit, 11 not."""
    cache = [{} for _ in model.blocks]
    model(prompts[:2], cache)
    for _ in range(10):
        model(prompts[:2, :1], cache)
    assert cache[0]["k"].shape[2] == 16
    with pytest.raises(ValueError, match="sequence length 17 exceeds block_size 16"):
        model(prompts[:2, :1], cache)


@pytest.mark.parametrize("kind", ["tinygpt", "gpt2"])
def test_completion_logprobs_through_the_shared_prompt_cache_equal_one_full_forward(
        model, prompts, kind):
    """Rows that share a prompt read it once (KV cache); values and gradients equal those of
    one forward over prompt + completion, for completions of several lengths."""
    policy = model
    if kind == "gpt2":
        pytest.importorskip("transformers")
        from course_lib.trl_bridge import to_hf

        policy = to_hf(model)
    grouped = prompts[:4].repeat_interleave(3, dim=0)  # (12, 6): 4 prompts x 3
    for n_new in (1, 4):
        out = sample(policy, grouped, n_new, generator=torch.Generator().manual_seed(1))
        grads = []
        for m in (policy, _NoCache(policy)):
            m.zero_grad()
            lp = completion_logprobs(m, grouped, out.tokens, out.mask)  # (12, N)
            (lp * torch.linspace(-1, 1, lp.numel()).view_as(lp)).sum().backward()
            grads.append((lp.detach(), [p.grad.clone() for p in policy.parameters()]))
        torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(grads[0][0], out.logprobs, atol=1e-5, rtol=0)
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

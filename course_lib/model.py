"""TinyGPT: a small causal transformer written out in full, plus sampling and log-probs.

Chapter: "A tiny language model and a verifiable task". The model follows minGPT
(Karpathy, github.com/karpathy/minGPT) and GPT-2 (Radford et al. 2019): token + position
embeddings, ``n_layer`` pre-LayerNorm blocks of causal self-attention and an MLP, a final
LayerNorm and a linear head to vocabulary logits. Attention is written out (no fused kernel)
"to show there is nothing too scary here".

Everything the trainers need from a policy goes through :func:`forward_logits`, which works
for :class:`TinyGPT` and for any Hugging Face causal LM (it reads ``.logits``), so the same
trainers run on a ``transformers`` GPT-2 (see the TRL chapter).

Shapes: B batch, P prompt length, N completion length, T = P + N, V vocabulary, C width,
H heads. Sampling keeps a KV cache (the keys and values of the tokens already read), so each
new token costs a forward pass over one position instead of the whole sequence; TinyGPT's
cache is a list of per-block dicts, a Hugging Face model's is its own ``past_key_values``.
The same cache lets rows that share a prompt (the G completions of a GRPO group) read it
once, when sampling and when computing log-probs with gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from course_lib.tasks import EOS_ID, PAD_ID, VOCAB

__all__ = [
    "ModelConfig",
    "TinyGPT",
    "ValueModel",
    "Samples",
    "forward_logits",
    "sample",
    "completion_logprobs",
    "count_parameters",
]


@dataclass
class ModelConfig:
    """Size of a :class:`TinyGPT`."""

    vocab_size: int = len(VOCAB)
    """Number of tokens (the character vocabulary of :mod:`course_lib.tasks`)."""
    block_size: int = 32
    """Longest sequence (prompt + completion) the position embedding covers."""
    n_layer: int = 2
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide ``n_embd``."""
    n_embd: int = 64
    """Width C of the residual stream."""
    dropout: float = 0.0
    """Dropout probability (0: sampling and training log-probs agree exactly)."""

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention (Vaswani et al. 2017, Eq. 1), written out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("causal", mask.view(1, 1, cfg.block_size, cfg.block_size),
                             persistent=False)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        """``x`` (B, T, C) -> (B, T, C). With a ``cache`` dict, ``x`` holds the positions
        after those whose keys and values the cache holds; the cache is then extended."""
        B, T, C = x.shape  # (B, T, C)
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, H, T, hs)
        if cache is not None:  # prepend the cached keys/values of the S - T earlier positions
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)  # (B, H, S, hs)
                v = torch.cat([cache["v"], v], dim=2)  # (B, H, S, hs)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]  # positions attended to; the queries are the last T of them
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, H, T, S)
        att = att.masked_fill(~self.causal[:, :, S - T:S, :S], float("-inf"))  # no peeking
        att = self.attn_drop(F.softmax(att, dim=-1))  # (B, H, T, S)
        y = att @ v  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C) heads side by side
        return self.resid_drop(self.c_proj(y))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),  # (B, T, 4C)
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),  # (B, T, C)
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)


class TinyGPT(nn.Module):
    """A GPT over the character vocabulary: ``ids (B, T) -> logits (B, T, V)``.

    Build with a seed for a reproducible initialisation: ``TinyGPT(ModelConfig(), seed=0)``
    (the global RNG is left untouched). Weights are initialised as in GPT-2: normal(0, 0.02),
    residual projections scaled by 1/sqrt(2 n_layer).
    """

    def __init__(self, config: ModelConfig | None = None, seed: int | None = 0):
        super().__init__()
        self.config = cfg = config or ModelConfig()
        # Build and initialise under a private RNG state: the global RNG is left untouched.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # (V, C)
            self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)  # (block_size, C)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
            self.ln_f = nn.LayerNorm(cfg.n_embd)
            self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)  # (C, V)
            self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02
                if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(p, mean=0.0, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def hidden(self, idx: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        """Final-LayerNorm hidden states ``(B, T, C)`` of token ids ``(B, T)``.

        ``cache``: None, or one dict per block (empty at first) holding the keys and values
        of the positions read so far; ``idx`` then continues those positions, and the
        dicts are extended (:func:`sample` decodes one token per call this way)."""
        B, T = idx.shape
        start = cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0  # cached positions
        if start + T > self.config.block_size:
            raise ValueError(f"sequence length {start + T} exceeds block_size "
                             f"{self.config.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])  # (B, T, C)
        return self.ln_f(x)  # (B, T, C)

    def forward(self, idx: torch.Tensor, cache: list[dict] | None = None) -> torch.Tensor:
        """Logits ``(B, T, V)``: position t scores the token at t + 1 (``cache``: see
        :meth:`hidden`)."""
        return self.head(self.hidden(idx, cache))  # (B, T, V)


class ValueModel(nn.Module):
    """A critic for PPO: a TinyGPT body with a scalar head, ``ids (B, T) -> values (B, T)``.

    ``values[:, t]`` estimates the return after having read tokens ``0..t``. It is a
    separate model with its own parameters, as in InstructGPT (Ouyang et al. 2022, where it
    starts from the reward model); here it starts from the policy's body when the policy is
    a :class:`TinyGPT` of the same config (``ValueModel.from_policy``), else from scratch.
    """

    def __init__(self, config: ModelConfig | None = None, seed: int | None = 0):
        super().__init__()
        self.body = TinyGPT(config, seed=seed)
        self.body.head = nn.Identity()  # the LM head is not used
        with torch.random.fork_rng(devices=[]):  # leave the global RNG untouched
            self.v_head = nn.Linear(self.body.config.n_embd, 1)  # (C, 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    @classmethod
    def from_policy(cls, policy: nn.Module, config: ModelConfig | None = None,
                    seed: int | None = 0) -> ValueModel:
        """A critic whose body copies ``policy`` (if it is a TinyGPT), value head zero."""
        if isinstance(policy, TinyGPT):
            critic = cls(policy.config, seed=seed)
            state = {k: v for k, v in policy.state_dict().items() if not k.startswith("head.")}
            critic.body.load_state_dict(state, strict=False)
            return critic
        return cls(config, seed=seed)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.v_head(self.body.hidden(idx)).squeeze(-1)  # (B, T)


def count_parameters(model: nn.Module | None) -> int:
    """Number of parameters of ``model`` (0 for None)."""
    return 0 if model is None else sum(p.numel() for p in model.parameters())


def forward_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``(B, T, V)`` of ``input_ids (B, T)`` for any causal LM.

    Works for :class:`TinyGPT` (returns a tensor) and for a Hugging Face causal LM (returns an
    output object whose ``.logits`` is read). No attention mask is passed: every prompt of a
    task has the same length and completions are right-padded, so padding only ever comes
    *after* the positions whose logits are used.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    out = model(input_ids)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return logits.float()  # (B, T, V)


def _check_temperature(temperature: float, top_k: int | None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax decoding), "
                         f"got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be None or >= 1, got {top_k}")


def _log_softmax(logits: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    """Log-probs ``(..., V)`` of the sampling distribution: logits / temperature, then (if
    ``top_k``) everything below the k-th largest logit removed and renormalised."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return F.log_softmax(logits, dim=-1)


class _Decoder:
    """Logits of a batch of sequences that grows by appending tokens.

    With a KV cache (TinyGPT, or a Hugging Face model that can generate) every position is
    read once: :meth:`prefill` reads the prompts (and, for log-probs, the completion
    after them), each :meth:`extend` only the new tokens.
    Identical prompts (GRPO's groups: each prompt G times) are read once and share their
    cache entries. Any other model re-reads the whole sequence at every call. Works with and
    without gradient (:func:`completion_logprobs` backpropagates through the cache).
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.kind = ("tiny" if isinstance(model, TinyGPT)
                     else "hf" if callable(getattr(model, "can_generate", None))
                     and model.can_generate() else "full")
        self.seq: torch.Tensor | None = None  # (B, P + t), kind "full" only
        self.cache = None

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of ``ids`` (B, T) after the cached positions; extends the cache."""
        if self.kind == "tiny":
            self.cache = self.cache or [{} for _ in self.model.blocks]
            return self.model(ids, self.cache).float()  # (B, T, V)
        out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits.float()  # (B, T, V)

    def prefill(self, prompt_ids: torch.Tensor,
                then: torch.Tensor | None = None) -> torch.Tensor:
        """Read the prompts (B, P), then the tokens ``then`` (B, T) if given; return the
        logits (B, 1 + T, V) after the last prompt token and after each token of ``then``."""
        P = prompt_ids.shape[1]
        if self.kind == "full":
            self.seq = prompt_ids if then is None else torch.cat([prompt_ids, then], dim=1)
            return forward_logits(self.model, self.seq)[:, P - 1:]  # (B, 1 + T, V)
        unique, index = torch.unique(prompt_ids, dim=0, return_inverse=True)  # (U, P), (B,)
        logits = self._forward(unique)[:, -1:]  # (U, 1, V), cache of the U distinct prompts
        if self.kind == "tiny":  # row b of the batch takes the cache of prompt index[b]
            self.cache = [{k: v[index] for k, v in layer.items()} for layer in self.cache]
        else:
            self.cache.reorder_cache(index)
        logits = logits[index]  # (B, 1, V)
        if then is not None and then.shape[1] > 0:
            logits = torch.cat([logits, self.extend(then)], dim=1)  # (B, 1 + T, V)
        return logits

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` (B, T); return the logits (B, T, V) after each of them."""
        if self.kind == "full":
            self.seq = torch.cat([self.seq, tokens], dim=1)  # (B, P + t + T)
            return forward_logits(self.model, self.seq)[:, -tokens.shape[1]:]  # (B, T, V)
        return self._forward(tokens)  # (B, T, V)


@dataclass
class Samples:
    """Output of :func:`sample`. N is the longest completion in the batch (<= max_new_tokens).

    Attributes:
        prompt_ids: (B, P) the prompts.
        tokens: (B, N) completion token ids, right-padded with EOS after the first EOS.
        logprobs: (B, N) log-prob of each sampled token under the sampling distribution
            (temperature and top-k applied), 0 on padding.
        mask: (B, N) float, 1 on real completion tokens (up to and including the first EOS).
        entropy: (B, N) entropy in nats of the distribution each token was drawn from
            (the same one as ``logprobs``), 0 on padding; no gradient.
    """

    prompt_ids: torch.Tensor
    tokens: torch.Tensor
    logprobs: torch.Tensor
    mask: torch.Tensor
    entropy: torch.Tensor


def sample(model: nn.Module, prompt_ids: torch.Tensor, max_new_tokens: int,
           temperature: float = 1.0, top_k: int | None = None, greedy: bool = False,
           generator: torch.Generator | None = None, eos_id: int = EOS_ID,
           grad: bool = False) -> Samples:
    """Sample completions for a batch of equal-length prompts (autoregressive, batched).

    At each step the next token is drawn from ``softmax(logits / temperature)`` (restricted to
    the ``top_k`` largest logits if given), or is the argmax when ``greedy``; its log-prob
    under that distribution is recorded (greedy: under the temperature-1 distribution). A
    sequence stops at its first EOS; later positions are padding (EOS id, mask 0). Sampling
    stops early once every sequence has finished. The entropy ``-sum_v p_v log p_v`` of each
    of those distributions is recorded too: the logits are already there, so it costs no
    extra forward pass (the trainers log its mean, the policy's entropy, which DAPO's
    clip-higher is about: Yu et al. 2025, §3.1).

    Args:
        model: a TinyGPT or a Hugging Face causal LM (see :func:`forward_logits`).
        prompt_ids: (B, P) LongTensor.
        max_new_tokens: the completion budget (>= 1).
        temperature: > 0.
        top_k: keep only the k most likely tokens (None: all).
        greedy: argmax decoding (used by :func:`course_lib.evaluate.evaluate`).
        generator: a ``torch.Generator`` for reproducible draws.
        grad: keep the autograd graph of ``logprobs`` (default: no graph is built). With
            one update per batch the trainers use it as the training forward pass: the
            log-probs of the sampled tokens under the current weights are exactly the
            sampling log-probs, so recomputing them would repeat the same computation.

    Returns:
        :class:`Samples` with tokens, logprobs, mask and entropy of shape (B, N).
    """
    _check_temperature(temperature, top_k)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] == 0:
        raise ValueError(f"prompt_ids must be a non-empty (B, P) tensor, "
                         f"got {tuple(prompt_ids.shape)}")
    with torch.set_grad_enabled(grad):
        return _sample(model, prompt_ids, max_new_tokens, temperature, top_k, greedy,
                       generator, eos_id)


def _sample(model, prompt_ids, max_new_tokens, temperature, top_k, greedy, generator,
            eos_id) -> Samples:
    was_training = model.training
    model.eval()
    B = prompt_ids.shape[0]
    decoder = _Decoder(model)
    logits = decoder.prefill(prompt_ids)[:, -1]  # (B, V) next-token logits after the prompt
    tokens, logps, masks, entropies = [], [], [], []
    alive = torch.ones(B, dtype=torch.bool)  # (B,) not yet finished
    for t in range(max_new_tokens):
        if greedy:
            logp = F.log_softmax(logits, dim=-1)  # (B, V)
            nxt = logits.argmax(-1)  # (B,)
        else:
            logp = _log_softmax(logits, temperature, top_k)  # (B, V)
            nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)  # (B,)
        tok_logp = logp.gather(1, nxt[:, None]).squeeze(1)  # (B,)
        entropy = torch.special.entr(logp.detach().exp()).sum(-1)  # (B,) entr(0) = 0: top-k
        nxt = torch.where(alive, nxt, torch.full_like(nxt, PAD_ID))
        tokens.append(nxt)
        logps.append(torch.where(alive, tok_logp, torch.zeros_like(tok_logp)))
        masks.append(alive.float())
        entropies.append(entropy * alive)
        alive = alive & (nxt != eos_id)
        if not alive.any() or t == max_new_tokens - 1:
            break
        logits = decoder.extend(nxt[:, None])[:, -1]  # (B, V) logits after the new token
    model.train(was_training)
    return Samples(prompt_ids=prompt_ids, tokens=torch.stack(tokens, 1),  # (B, N)
                   logprobs=torch.stack(logps, 1), mask=torch.stack(masks, 1),
                   entropy=torch.stack(entropies, 1))


def completion_logprobs(model: nn.Module, prompt_ids: torch.Tensor, completion_ids: torch.Tensor,
                        mask: torch.Tensor | None = None, temperature: float = 1.0,
                        top_k: int | None = None) -> torch.Tensor:
    """Per-token log-probs ``(B, N)`` of given completions, with gradient.

    ``logp[b, t] = log pi(completion[b, t] | prompt[b], completion[b, :t])`` under the same
    distribution :func:`sample` draws from (logits / temperature, optional top-k), so the
    log-probs of a sampled completion equal the sampling log-probs. Used for the importance
    ratio (GRPO/PPO), the reference model's log-probs (KL) and DPO's sequence log-probs.
    Positions where ``mask`` is 0 are set to 0.

    Args:
        prompt_ids: (B, P); completion_ids: (B, N); mask: (B, N) 0/1 or None (all real).
    """
    _check_temperature(temperature, top_k)
    if prompt_ids.dim() != 2 or completion_ids.dim() != 2:
        raise ValueError("prompt_ids and completion_ids must be 2-D (B, P) and (B, N)")
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(f"batch sizes differ: prompts {prompt_ids.shape[0]}, "
                         f"completions {completion_ids.shape[0]}")
    N = completion_ids.shape[1]
    # logits[:, t] scores completion token t: the one after the prompt, then after each
    # completion token. Through the KV cache, rows that share a prompt (a GRPO group)
    # read it once; the result equals one forward over prompt + completion.
    logits = _Decoder(model).prefill(prompt_ids, completion_ids[:, :-1])  # (B, N, V)
    logp = _log_softmax(logits, temperature, top_k)  # (B, N, V)
    out = logp.gather(2, completion_ids[:, :, None]).squeeze(2)  # (B, N)
    if mask is not None:
        if mask.shape != completion_ids.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != completion shape "
                             f"{tuple(completion_ids.shape)}")
        out = out * mask
    assert out.shape == (prompt_ids.shape[0], N)
    return out


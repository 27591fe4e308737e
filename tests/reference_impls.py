"""Naive re-implementations of the course_lib algorithm functions, and the checkers that
compare an implementation against them.

The references are written from the text of issue 2 (the specification of the functions),
not from course_lib: python loops over groups, sequences and tokens, ``math`` on python
floats (float64), no torch and no vectorisation, so that a bug shared by both sides is
unlikely. Each ``ref_*`` function mirrors one course_lib function and returns python
lists / floats.

Each ``compare_*`` checker runs an implementation on a fixed set of seeded random inputs
covering every option of the function and returns a list of human-readable mismatches
(empty when the implementation agrees with the reference). The unit tests assert the list
is empty for course_lib; ``test_mutations.py`` asserts it is NOT empty for deliberately
wrong variants, which shows the checkers can fail.
"""

from __future__ import annotations

import itertools
import math

import torch

# ----------------------------------------------------------------------------------------
# small helpers on nested python lists
# ----------------------------------------------------------------------------------------


def _mean(xs):
    return sum(xs) / len(xs)


def _std_unbiased(xs):
    """Bessel-corrected (n - 1) standard deviation of a python list."""
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _map_groups(nested, fn):
    """Apply ``fn`` to every innermost list (a group) of a nested list."""
    if nested and isinstance(nested[0], list):
        return [_map_groups(sub, fn) for sub in nested]
    return fn(nested)


def _flatten(nested):
    if nested and isinstance(nested[0], list):
        return [x for sub in nested for x in _flatten(sub)]
    return list(nested)


def _log_sigmoid(z):
    """Numerically stable log(sigmoid(z)) on a python float."""
    if z >= 0:
        return -math.log1p(math.exp(-z))
    return z - math.log1p(math.exp(z))


# ----------------------------------------------------------------------------------------
# reference implementations (issue 2, section "course_lib: the algorithms")
# ----------------------------------------------------------------------------------------


def ref_group_advantages(rewards, eps=1e-6, scale="group"):
    """rewards: nested list, groups along the innermost level. Same nesting returned.

    group: (r - mean_g) / (std_g + eps), std_g unbiased; none: r - mean_g;
    batch: (r - mean_g) / (std_all + eps), std_all unbiased over every reward.
    A group whose rewards are all equal gets exactly 0.
    """
    std_all = _std_unbiased(_flatten(rewards)) if scale == "batch" else None

    def one_group(g):
        if all(x == g[0] for x in g):
            return [0.0] * len(g)
        m = _mean(g)
        if scale == "group":
            s = _std_unbiased(g)
            return [(x - m) / (s + eps) for x in g]
        if scale == "none":
            return [x - m for x in g]
        if scale == "batch":
            return [(x - m) / (std_all + eps) for x in g]
        raise ValueError(scale)

    return _map_groups(rewards, one_group)


def ref_baseline_advantages(rewards, baseline="rloo"):
    """rewards: nested list, groups along the innermost level. Same nesting returned.

    rloo: r_i minus the mean of the OTHER G - 1 rewards, summed in a loop; mean: r_i minus
    the mean of all G; none: r_i. A group of equal rewards gets exactly 0 with a baseline.
    """
    def one_group(g):
        if baseline == "none":
            return list(g)
        if all(x == g[0] for x in g):
            return [0.0] * len(g)
        if baseline == "mean":
            return [x - _mean(g) for x in g]
        return [x - sum(y for j, y in enumerate(g) if j != i) / (len(g) - 1)
                for i, x in enumerate(g)]

    return _map_groups(rewards, one_group)


def ref_kl_token(logp, ref, kind="k3"):
    """Per-token estimate of KL(pi_theta || pi_ref) from log-probs of sampled tokens."""
    if kind == "k1":
        return logp - ref
    if kind == "k2":
        return 0.5 * (logp - ref) ** 2
    if kind == "k3":
        x = ref - logp  # log(pi_ref / pi_theta)
        return math.exp(x) - x - 1.0
    raise ValueError(kind)


def ref_kl(logprobs, ref_logprobs, kind="k3"):
    """Elementwise ``ref_kl_token`` over nested lists of the same shape."""
    if isinstance(logprobs, list):
        return [ref_kl(a, b, kind) for a, b in zip(logprobs, ref_logprobs, strict=True)]
    return ref_kl_token(logprobs, ref_logprobs, kind)


def ref_surrogate_token(logp, old, adv, clip_eps, clip_eps_high):
    """(loss term, ratio, clipped-term-used) for one token.

    loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A). The clipped term is
    "the one used" when it is strictly smaller than the unclipped one.
    """
    ratio = math.exp(logp - old)
    clipped_ratio = min(max(ratio, 1.0 - clip_eps), 1.0 + clip_eps_high)
    unclipped, clipped = ratio * adv, clipped_ratio * adv
    return -min(unclipped, clipped), ratio, clipped < unclipped


def _token_terms(logprobs, old_logprobs, advantages, mask, clip_eps, clip_eps_high,
                 ref_logprobs=None, beta=0.0):
    """Per sequence, the list of (loss term, ratio, clipped?, k3) of its real tokens."""
    B, T = len(logprobs), len(logprobs[0])
    if clip_eps_high is None:
        clip_eps_high = clip_eps
    seqs = []
    for b in range(B):
        terms = []
        for t in range(T):
            if mask is not None and mask[b][t] == 0:
                continue
            a = advantages[b][t] if isinstance(advantages[b], list) else advantages[b]
            term, ratio, clipped = ref_surrogate_token(
                logprobs[b][t], old_logprobs[b][t], a, clip_eps, clip_eps_high)
            k3 = None
            if ref_logprobs is not None:
                k3 = ref_kl_token(logprobs[b][t], ref_logprobs[b][t], "k3")
                if beta > 0:
                    term += beta * k3
            terms.append((term, ratio, clipped, k3))
        seqs.append(terms)
    return seqs


def _token_stats(seqs, with_kl):
    toks = [tok for terms in seqs for tok in terms]
    stats = {
        "clip_frac": _mean([1.0 if tok[2] else 0.0 for tok in toks]),
        "ratio_mean": _mean([tok[1] for tok in toks]),
    }
    if with_kl is not None:
        stats["kl"] = _mean([tok[3] for tok in toks]) if with_kl else 0.0
    return stats


def ref_grpo_loss(logprobs, old_logprobs, advantages, mask=None, ref_logprobs=None,
                  clip_eps=0.2, clip_eps_high=None, beta=0.04, loss_type="grpo",
                  max_len=None):
    """Returns (loss, stats). Token inputs are B x T nested lists; advantages B or B x T.

    grpo: mean over each sequence's real tokens, then mean over the sequences that have
    at least one real token (DeepSeekMath Eq. 3); dapo/bnpo: sum over real tokens / their
    number; dr_grpo: sum over real tokens / (B * max_len), max_len defaulting to T.
    """
    B, T = len(logprobs), len(logprobs[0])
    seqs = _token_terms(logprobs, old_logprobs, advantages, mask, clip_eps, clip_eps_high,
                        ref_logprobs, beta)
    if loss_type == "grpo":
        loss = _mean([_mean([tok[0] for tok in terms]) for terms in seqs if terms])
    elif loss_type in ("dapo", "bnpo"):
        loss = _mean([tok[0] for terms in seqs for tok in terms])
    elif loss_type == "dr_grpo":
        loss = sum(tok[0] for terms in seqs for tok in terms) / (B * (max_len or T))
    else:
        raise ValueError(loss_type)
    return loss, _token_stats(seqs, with_kl=ref_logprobs is not None)


def ref_ppo_policy_loss(logprobs, old_logprobs, advantages, mask=None, clip_eps=0.2,
                        clip_eps_high=None, agg="token-mean"):
    """Returns (loss, stats); advantages per token (B x T). Sequences without real tokens
    are left out of the per-sequence means."""
    seqs = _token_terms(logprobs, old_logprobs, advantages, mask, clip_eps, clip_eps_high)
    if agg == "token-mean":
        loss = _mean([tok[0] for terms in seqs for tok in terms])
    elif agg == "seq-mean-token-mean":
        loss = _mean([_mean([tok[0] for tok in terms]) for terms in seqs if terms])
    elif agg == "seq-mean-token-sum":
        loss = _mean([sum(tok[0] for tok in terms) for terms in seqs if terms])
    else:
        raise ValueError(agg)
    return loss, _token_stats(seqs, with_kl=None)


def ref_gae(rewards, values, mask=None, gamma=1.0, lam=0.95):
    """Returns (advantages, returns) as B x T lists; None at padded positions.

    Walks each sequence's real tokens backwards:
    delta_t = r_t + gamma * V(next real token) - V_t, with V = 0 after the last real token;
    A_t = delta_t + gamma * lam * A_(next real token).
    """
    B, T = len(rewards), len(rewards[0])
    advs, rets = [], []
    for b in range(B):
        real = [t for t in range(T) if mask is None or mask[b][t] == 1]
        adv_row, ret_row = [None] * T, [None] * T
        next_value, next_adv = 0.0, 0.0
        for t in reversed(real):
            delta = rewards[b][t] + gamma * next_value - values[b][t]
            adv = delta + gamma * lam * next_adv
            adv_row[t], ret_row[t] = adv, adv + values[b][t]
            next_value, next_adv = values[b][t], adv
        advs.append(adv_row)
        rets.append(ret_row)
    return advs, rets


def ref_reward_to_go(rewards, mask=None):
    """sum_{t' >= t, real} r_t' at each real position (None at padding)."""
    out = []
    for b, row in enumerate(rewards):
        acc, res = 0.0, [None] * len(row)
        for t in reversed(range(len(row))):
            if mask is None or mask[b][t] == 1:
                acc += row[t]
                res[t] = acc
        out.append(res)
    return out


def ref_whiten(x, mask=None):
    """(x - masked mean) / sqrt(unbiased masked variance); None at padded positions."""
    real = [(b, t) for b in range(len(x)) for t in range(len(x[0]))
            if mask is None or mask[b][t] == 1]
    vals = [x[b][t] for b, t in real]
    m, s = _mean(vals), _std_unbiased(vals)
    out = [[None] * len(x[0]) for _ in x]
    for b, t in real:
        out[b][t] = (x[b][t] - m) / s
    return out


def ref_value_loss(values, old_values, returns, mask=None, clip_range=0.2):
    """0.5 * token-mean(max((v - R)^2, (old + clip(v - old, -c, c) - R)^2)); clip_frac is
    the share of real tokens where the clipped square is strictly the larger one."""
    terms, clipped = [], []
    for b in range(len(values)):
        for t in range(len(values[0])):
            if mask is not None and mask[b][t] == 0:
                continue
            v, old, ret = values[b][t], old_values[b][t], returns[b][t]
            unclipped_sq = (v - ret) ** 2
            v_clipped = old + min(max(v - old, -clip_range), clip_range)
            clipped_sq = (v_clipped - ret) ** 2
            terms.append(max(unclipped_sq, clipped_sq))
            clipped.append(1.0 if clipped_sq > unclipped_sq else 0.0)
    return 0.5 * _mean(terms), {"clip_frac": _mean(clipped)}


def ref_dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1,
                 loss_type="sigmoid", label_smoothing=0.0):
    """Returns (loss, stats); inputs are lists of per-pair sequence log-probs."""
    losses, chosen_r, rejected_r = [], [], []
    ls = label_smoothing
    for pc, pr, rc, rr in zip(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                              strict=True):
        chosen_logratio, rejected_logratio = pc - rc, pr - rr
        margin = chosen_logratio - rejected_logratio
        z = beta * margin
        if loss_type == "sigmoid":  # DPO; conservative DPO (cDPO) when ls > 0
            loss = -(1 - ls) * _log_sigmoid(z) - ls * _log_sigmoid(-z)
        elif loss_type == "ipo":  # Azar et al. 2023
            loss = (margin - 1 / (2 * beta)) ** 2
        elif loss_type == "hinge":  # SLiC
            loss = max(0.0, 1 - z)
        elif loss_type == "robust":  # rDPO, Chowdhury et al. 2024
            loss = (-(1 - ls) * _log_sigmoid(z) + ls * _log_sigmoid(-z)) / (1 - 2 * ls)
        else:
            raise ValueError(loss_type)
        losses.append(loss)
        chosen_r.append(beta * chosen_logratio)
        rejected_r.append(beta * rejected_logratio)
    stats = {
        "chosen_rewards": _mean(chosen_r),
        "rejected_rewards": _mean(rejected_r),
        "reward_accuracy": _mean([1.0 if c > r else 0.0
                                  for c, r in zip(chosen_r, rejected_r, strict=True)]),
        "reward_margin": _mean([c - r for c, r in zip(chosen_r, rejected_r, strict=True)]),
    }
    return _mean(losses), stats


def ref_policy_loss_grad(logprobs, old_logprobs, advantages, mask=None, ref_logprobs=None,
                         clip_eps=0.2, clip_eps_high=None, beta=0.0, agg="token-mean",
                         max_len=None):
    """d loss / d logprobs (B x T) of the clipped surrogate (+ beta * k3), by hand.

    Per real token: d/dlogp of -min(ratio A, clip(ratio) A) is 0 where the clipped term is
    used and -ratio * A elsewhere; d/dlogp of beta * k3 = beta * (exp(ref - logp) - (ref -
    logp) - 1) is beta * (1 - exp(ref - logp)). Times the token's weight in the
    aggregation: 1/N (token-mean), 1/(n_i S) (per-sequence mean of S non-empty sequences),
    1/S (seq-mean-token-sum), 1/(B max_len) (dr_grpo's constant). Padding gets 0.
    ``agg`` takes the grpo loss_types or the ppo aggregations.
    """
    B, T = len(logprobs), len(logprobs[0])
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    real = [[mask is None or mask[b][t] == 1 for t in range(T)] for b in range(B)]
    n_seq = [sum(row) for row in real]
    S, N = sum(1 for n in n_seq if n > 0), sum(n_seq)
    grads = [[0.0] * T for _ in range(B)]
    for b in range(B):
        for t in range(T):
            if not real[b][t]:
                continue
            a = advantages[b][t] if isinstance(advantages[b], list) else advantages[b]
            _, ratio, clipped = ref_surrogate_token(
                logprobs[b][t], old_logprobs[b][t], a, clip_eps, eps_high)
            g = 0.0 if clipped else -ratio * a
            if ref_logprobs is not None and beta > 0:
                g += beta * (1.0 - math.exp(ref_logprobs[b][t] - logprobs[b][t]))
            if agg in ("token-mean", "dapo", "bnpo"):
                w = 1.0 / N
            elif agg in ("seq-mean-token-mean", "grpo"):
                w = 1.0 / (n_seq[b] * S)
            elif agg == "seq-mean-token-sum":
                w = 1.0 / S
            elif agg == "dr_grpo":
                w = 1.0 / (B * (max_len or T))
            else:
                raise ValueError(agg)
            grads[b][t] = g * w
    return grads


def ref_value_loss_grad(values, old_values, returns, mask=None, clip_range=0.2):
    """d value_loss / d values (B x T), by hand: 0.5 * d/dv max(u, c) / N with
    u = (v - R)^2 (gradient 2 (v - R)) and c = (old + clip(v - old) - R)^2 (gradient
    2 (v_clip - R) inside the clip range, 0 outside); padding gets 0."""
    B, T = len(values), len(values[0])
    real = [(b, t) for b in range(B) for t in range(T) if mask is None or mask[b][t] == 1]
    grads = [[0.0] * T for _ in range(B)]
    for b, t in real:
        v, old, ret = values[b][t], old_values[b][t], returns[b][t]
        moved = v - old
        inside = -clip_range < moved < clip_range
        v_clip = old + min(max(moved, -clip_range), clip_range)
        u, c = (v - ret) ** 2, (v_clip - ret) ** 2
        g = 2 * (v - ret) if (u >= c or inside) else 0.0  # inside: v_clip = v, same term
        grads[b][t] = 0.5 * g / len(real)
    return grads


# ----------------------------------------------------------------------------------------
# seeded random inputs
# ----------------------------------------------------------------------------------------


def random_mask(gen, B, T, kind="right", empty_row=None):
    """0/1 float mask (B, T). kind="right": right padding with random lengths in 1..T;
    kind="any": independent 0/1 tokens (at least one real token per row). ``empty_row``
    (an index) gets no real token at all."""
    if kind == "right":
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    else:
        mask = (torch.rand(B, T, generator=gen, dtype=torch.float64) < 0.6).double()
        mask[:, 0] = 1.0
    if empty_row is not None:
        mask[empty_row] = 0.0
    return mask


def _close(got, want, rtol, atol):
    return abs(got - want) <= atol + rtol * abs(want)


def _diff_tensor(name, got, want, mask=None, rtol=1e-5, atol=1e-6):
    """Compare a tensor with a nested reference list (positions where mask == 0 or the
    reference is None are skipped). Returns a list with at most one mismatch message."""
    if not isinstance(got, torch.Tensor):
        return [f"{name}: expected a tensor, got {type(got).__name__}"]
    want_flat = _flatten(want) if isinstance(want, list) else [want]
    got_flat = got.detach().double().reshape(-1).tolist()
    if len(got_flat) != len(want_flat):
        return [f"{name}: shape {tuple(got.shape)} does not match the reference "
                f"({len(want_flat)} elements)"]
    mask_flat = mask.reshape(-1).tolist() if mask is not None else [1.0] * len(want_flat)
    for i, (g, w, m) in enumerate(zip(got_flat, want_flat, mask_flat, strict=True)):
        if m == 0 or w is None:
            continue
        if not _close(g, w, rtol, atol):
            return [f"{name}: element {i} is {g:.8g}, reference {w:.8g}"]
    return []


def _diff_stats(name, got, want, rtol=1e-5, atol=1e-6):
    out = []
    if not isinstance(got, dict):
        return [f"{name}: stats should be a dict, got {type(got).__name__}"]
    for key, w in want.items():
        if key not in got:
            out.append(f"{name}: stats has no key {key!r}")
            continue
        g = got[key]
        if not isinstance(g, float):
            out.append(f"{name}: stats[{key!r}] should be a python float, got "
                       f"{type(g).__name__}")
            continue
        if not _close(g, w, rtol, atol):
            out.append(f"{name}: stats[{key!r}] is {g:.8g}, reference {w:.8g}")
    return out


def _tol(dtype):
    return (1e-5, 1e-6) if dtype == torch.float64 else (1e-4, 1e-5)


# ----------------------------------------------------------------------------------------
# checkers: implementation vs reference on random inputs, every option
# ----------------------------------------------------------------------------------------


def _random_rewards(shape, dtype, binary, gen):
    """Rewards of ``shape``: 0/1 (then some groups are all equal) or continuous."""
    if binary:
        return (torch.rand(shape, generator=gen) < 0.5).to(dtype)
    return (torch.randn(shape, generator=gen) * 3 + 1).to(dtype)


def _check_call(problems, name, fn, args, kwargs, want, dtype):
    """Run ``fn(*args, **kwargs)``; append to ``problems`` if it raises, changes the dtype
    or differs from ``want``. Returns its result (None if it raised)."""
    try:
        got = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - report any failure as a mismatch
        problems.append(f"{name}: raised {exc!r}")
        return None
    if isinstance(got, torch.Tensor) and got.dtype != dtype:
        problems.append(f"{name}: returned dtype {got.dtype}, input was {dtype}")
    problems += _diff_tensor(name, got, want, None, *_tol(dtype))
    return got


def compare_group_advantages(fn, seed=0):
    """``fn`` has the signature of course_lib.compute_group_advantages."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    shapes = [(8,), (2,), (3, 4), (2, 3, 5), (16, 8)]
    for scale, shape, dtype, binary in itertools.product(
            ["group", "none", "batch"], shapes, [torch.float64, torch.float32],
            [False, True]):
        r = _random_rewards(shape, dtype, binary, gen)
        for eps in (1e-6, 1e-4):
            want = ref_group_advantages(r.double().tolist(), eps=eps, scale=scale)
            name = f"scale={scale} shape={shape} {dtype} binary={binary} eps={eps}"
            got = _check_call(problems, name, fn, (r.clone(),), {"eps": eps, "scale": scale},
                              want, dtype)
            if isinstance(got, torch.Tensor):  # exact zeros for all-equal groups
                flat_r = r.reshape(-1, shape[-1])
                flat_a = got.detach().reshape(-1, shape[-1])
                for g in range(flat_r.shape[0]):
                    if bool((flat_r[g] == flat_r[g, 0]).all()) and bool(flat_a[g].any()):
                        problems.append(f"{name}: all-equal group {g} got non-zero "
                                        f"advantages {flat_a[g].tolist()}")
    # groups of equal values whose float mean is not exact (0.1 * 7 / 7 != 0.1 in float32)
    for scale, dtype in itertools.product(["group", "none", "batch"],
                                          [torch.float64, torch.float32]):
        r = torch.tensor([[0.1] * 7, [0.3] * 7, [0.7] * 7, list(range(7))], dtype=dtype)
        try:
            got = fn(r, scale=scale)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"equal groups scale={scale} {dtype}: raised {exc!r}")
            continue
        if not bool((got[:3] == 0).all()):
            problems.append(f"equal groups scale={scale} {dtype}: advantages "
                            f"{got[:3].tolist()} should be exactly 0")
    return problems


def compare_baseline_advantages(fn, seed=0):
    """``fn`` has the signature of course_lib.baseline_advantages."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    for baseline, shape, dtype, binary in itertools.product(
            ["rloo", "mean", "none"], [(8,), (2,), (3, 4), (2, 3, 5)],
            [torch.float64, torch.float32], [False, True]):
        r = _random_rewards(shape, dtype, binary, gen)
        want = ref_baseline_advantages(r.double().tolist(), baseline)
        name = f"baseline={baseline} shape={shape} {dtype} binary={binary}"
        _check_call(problems, name, fn, (r.clone(), baseline), {}, want, dtype)
    return problems


def compare_kl(fn, seed=0):
    """``fn`` has the signature of course_lib.kl_estimate."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    for kind, shape, dtype in itertools.product(
            ["k1", "k2", "k3"], [(7,), (3, 5), (2, 3, 4)], [torch.float64, torch.float32]):
        logp = (-torch.rand(shape, generator=gen, dtype=torch.float64) * 5).to(dtype)
        ref = (logp.double() + torch.randn(shape, generator=gen, dtype=torch.float64)).to(
            dtype)
        want = ref_kl(logp.double().tolist(), ref.double().tolist(), kind)
        name = f"kind={kind} shape={shape} {dtype}"
        try:
            got = fn(logp, ref, kind=kind)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name, got, want, None, *_tol(dtype))
    return problems


def _random_policy_batch(gen, B, T, dtype, spread=0.3):
    old = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 4  # (B, T)
    logp = old + torch.randn(B, T, generator=gen, dtype=torch.float64) * spread
    ref = logp + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.5
    return logp.to(dtype), old.to(dtype), ref.to(dtype)


def compare_grpo_loss(fn, seed=0):
    """``fn`` has the signature of course_lib.grpo_loss. Covers every loss_type, max_len,
    clip_eps_high, beta with and without ref_logprobs, per-sequence and per-token
    advantages, no mask / right-padded / arbitrary masks with an all-padding sequence."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 5, 6
    cases = itertools.product(
        ["grpo", "dapo", "bnpo", "dr_grpo"],  # loss_type
        [None, 9],  # max_len
        [None, 0.28],  # clip_eps_high
        [(0.0, False), (0.04, True), (0.5, True), (0.0, True)],  # beta, with ref
        ["seq", "token"],  # advantage shape
        ["none", "right", "any_empty"],  # mask
    )
    for loss_type, max_len, eps_high, (beta, with_ref), adv_kind, mask_kind in cases:
        if max_len is not None and loss_type != "dr_grpo":
            continue
        dtype = torch.float64 if mask_kind != "right" else torch.float32
        logp, old, ref = _random_policy_batch(gen, B, T, dtype)
        if adv_kind == "seq":
            adv = torch.randn(B, generator=gen, dtype=torch.float64).to(dtype)  # (B,)
        else:
            adv = torch.randn(B, T, generator=gen, dtype=torch.float64).to(dtype)  # (B, T)
        mask = None
        if mask_kind == "right":
            mask = random_mask(gen, B, T, "right").to(dtype)
        elif mask_kind == "any_empty":
            mask = random_mask(gen, B, T, "any", empty_row=2).to(dtype)
        kwargs = dict(mask=mask, ref_logprobs=ref if with_ref else None, clip_eps=0.2,
                      clip_eps_high=eps_high, beta=beta, loss_type=loss_type,
                      max_len=max_len)
        name = (f"loss_type={loss_type} max_len={max_len} clip_eps_high={eps_high} "
                f"beta={beta} ref={with_ref} adv={adv_kind} mask={mask_kind}")
        want_loss, want_stats = ref_grpo_loss(
            logp.double().tolist(), old.double().tolist(), adv.double().tolist(),
            mask=None if mask is None else mask.tolist(),
            ref_logprobs=ref.double().tolist() if with_ref else None, clip_eps=0.2,
            clip_eps_high=eps_high, beta=beta, loss_type=loss_type, max_len=max_len)
        if with_ref and beta == 0:
            del want_stats["kl"]  # the issue leaves the logged kl open in this case
        try:
            got_loss, got_stats = fn(logp, old, adv, **kwargs)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        if isinstance(got_loss, torch.Tensor) and got_loss.dim() != 0:
            problems.append(f"{name}: loss should be a scalar, got shape "
                            f"{tuple(got_loss.shape)}")
        problems += _diff_tensor(name + " loss", got_loss, want_loss, None, *_tol(dtype))
        problems += _diff_stats(name, got_stats, want_stats, *_tol(dtype))
    return problems


def compare_ppo_policy_loss(fn, seed=0):
    """``fn`` has the signature of course_lib.ppo_policy_loss."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 4, 7
    for agg, eps_high, mask_kind, dtype in itertools.product(
            ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"], [None, 0.28],
            ["none", "right", "any_empty"], [torch.float64, torch.float32]):
        logp, old, _ = _random_policy_batch(gen, B, T, dtype)
        adv = torch.randn(B, T, generator=gen, dtype=torch.float64).to(dtype)  # (B, T)
        mask = None
        if mask_kind == "right":
            mask = random_mask(gen, B, T, "right").to(dtype)
        elif mask_kind == "any_empty":
            mask = random_mask(gen, B, T, "any", empty_row=1).to(dtype)
        name = f"agg={agg} clip_eps_high={eps_high} mask={mask_kind} {dtype}"
        want_loss, want_stats = ref_ppo_policy_loss(
            logp.double().tolist(), old.double().tolist(), adv.double().tolist(),
            mask=None if mask is None else mask.tolist(), clip_eps=0.2,
            clip_eps_high=eps_high, agg=agg)
        del want_stats["ratio_mean"]  # the issue asks PPO only for the loss and stats dict
        try:
            got_loss, got_stats = fn(logp, old, adv, mask=mask, clip_eps=0.2,
                                     clip_eps_high=eps_high, agg=agg)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name + " loss", got_loss, want_loss, None, *_tol(dtype))
        problems += _diff_stats(name, got_stats, want_stats, *_tol(dtype))
    return problems


def compare_gae(fn, seed=0):
    """``fn`` has the signature of course_lib.gae. Masks are right-padded (lengths 0..T,
    the case issue 2 specifies) or have gaps ("any": masked tokens in the middle are
    skipped, the recursion runs over real tokens only, as course_lib documents); masked
    positions hold garbage rewards and values that must not leak in."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 5, 6
    for gamma, lam, mask_kind, dtype in itertools.product(
            [1.0, 0.9], [0.95, 1.0, 0.0], ["none", "right", "any"],
            [torch.float64, torch.float32]):
        rewards = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
        values = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
        mask = None
        if mask_kind != "none":
            mask = random_mask(gen, B, T, mask_kind, empty_row=4)
            rewards = rewards + 100.0 * (1 - mask)  # garbage in the padding
            values = values - 100.0 * (1 - mask)
        rewards, values = rewards.to(dtype), values.to(dtype)
        if mask is not None:
            mask = mask.to(dtype)
        name = f"gamma={gamma} lam={lam} mask={mask_kind} {dtype}"
        want_adv, want_ret = ref_gae(rewards.double().tolist(), values.double().tolist(),
                                     None if mask is None else mask.tolist(), gamma, lam)
        try:
            got_adv, got_ret = fn(rewards, values, mask=mask, gamma=gamma, lam=lam)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name + " advantages", got_adv, want_adv, mask, *_tol(dtype))
        problems += _diff_tensor(name + " returns", got_ret, want_ret, mask, *_tol(dtype))
    return problems


def compare_whiten(fn, seed=0):
    """``fn`` has the signature of course_lib.whiten (compared at real positions; a small
    eps inside the implementation's rsqrt is tolerated)."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    for shape, mask_kind, dtype in itertools.product(
            [(4, 6), (3, 9)], ["none", "any"], [torch.float64, torch.float32]):
        x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 4 + 2).to(dtype)
        mask = None
        if mask_kind == "any":
            mask = random_mask(gen, *shape, "any", empty_row=0).to(dtype)
            x = x + 50.0 * (1 - mask)  # garbage in the padding
        name = f"shape={shape} mask={mask_kind} {dtype}"
        want = ref_whiten(x.double().tolist(), None if mask is None else mask.tolist())
        try:
            got = fn(x, mask=mask)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name, got, want, mask, rtol=1e-4, atol=1e-4)
    return problems


def compare_value_loss(fn, seed=0):
    """``fn`` has the signature of course_lib.value_loss."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 4, 6
    for clip_range, mask_kind, dtype in itertools.product(
            [0.2, 0.5], ["none", "right", "any_empty"], [torch.float64, torch.float32]):
        old = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
        values = old + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.4
        returns = old + torch.randn(B, T, generator=gen, dtype=torch.float64)
        values, old, returns = values.to(dtype), old.to(dtype), returns.to(dtype)
        mask = None
        if mask_kind == "right":
            mask = random_mask(gen, B, T, "right").to(dtype)
        elif mask_kind == "any_empty":
            mask = random_mask(gen, B, T, "any", empty_row=3).to(dtype)
        name = f"clip_range={clip_range} mask={mask_kind} {dtype}"
        want_loss, want_stats = ref_value_loss(
            values.double().tolist(), old.double().tolist(), returns.double().tolist(),
            None if mask is None else mask.tolist(), clip_range)
        try:
            got_loss, got_stats = fn(values, old, returns, mask=mask, clip_range=clip_range)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name + " loss", got_loss, want_loss, None, *_tol(dtype))
        problems += _diff_stats(name, got_stats, want_stats, *_tol(dtype))
    return problems


def compare_dpo_loss(fn, seed=0):
    """``fn`` has the signature of course_lib.dpo_loss."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    N = 9
    cases = [("sigmoid", 0.0), ("sigmoid", 0.1), ("sigmoid", 0.3), ("ipo", 0.0),
             ("hinge", 0.0), ("robust", 0.0), ("robust", 0.1), ("robust", 0.3)]
    for (loss_type, ls), beta, dtype in itertools.product(
            cases, [0.1, 0.5], [torch.float64, torch.float32]):
        # sequence log-probs of a few dozen tokens: around -30, margins of a few nats
        ref_c = -30 + torch.randn(N, generator=gen, dtype=torch.float64) * 5
        ref_r = -30 + torch.randn(N, generator=gen, dtype=torch.float64) * 5
        pol_c = ref_c + torch.randn(N, generator=gen, dtype=torch.float64) * 3
        pol_r = ref_r + torch.randn(N, generator=gen, dtype=torch.float64) * 3
        pol_c, pol_r, ref_c, ref_r = (t.to(dtype) for t in (pol_c, pol_r, ref_c, ref_r))
        name = f"loss_type={loss_type} label_smoothing={ls} beta={beta} {dtype}"
        want_loss, want_stats = ref_dpo_loss(
            pol_c.double().tolist(), pol_r.double().tolist(), ref_c.double().tolist(),
            ref_r.double().tolist(), beta, loss_type, ls)
        try:
            got_loss, got_stats = fn(pol_c, pol_r, ref_c, ref_r, beta=beta,
                                     loss_type=loss_type, label_smoothing=ls)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        # float32 log-probs near -30 carry ~2e-6 absolute error into the margins
        rtol, atol = (1e-5, 1e-6) if dtype == torch.float64 else (1e-4, 1e-4)
        problems += _diff_tensor(name + " loss", got_loss, want_loss, None, rtol, atol)
        problems += _diff_stats(name, got_stats, want_stats, rtol, atol)
    return problems


def compare_policy_loss_grad(fn, seed=0, kind="grpo"):
    """Autograd gradient of grpo_loss (kind="grpo") or ppo_policy_loss (kind="ppo")
    w.r.t. the log-probs against ``ref_policy_loss_grad``: catches a KL term or a token
    weight that is right in value but wrong (or detached) in the gradient."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 5, 6
    if kind == "grpo":
        cases = itertools.product(["grpo", "dapo", "bnpo", "dr_grpo"], [None, 0.28],
                                  [0.0, 0.04, 0.5], ["none", "any_empty"])
    else:
        cases = itertools.product(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"],
                                  [None, 0.28], [0.0], ["none", "any_empty"])
    for agg, eps_high, beta, mask_kind in cases:
        logp, old, ref = _random_policy_batch(gen, B, T, torch.float64)
        adv = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
        mask = None
        if mask_kind == "any_empty":
            mask = random_mask(gen, B, T, "any", empty_row=3)
        name = f"{kind} grad agg={agg} clip_eps_high={eps_high} beta={beta} mask={mask_kind}"
        want = ref_policy_loss_grad(
            logp.tolist(), old.tolist(), adv.tolist(),
            None if mask is None else mask.tolist(), ref.tolist() if beta > 0 else None,
            0.2, eps_high, beta, agg)
        logp = logp.clone().requires_grad_(True)
        try:
            if kind == "grpo":
                loss, _ = fn(logp, old, adv, mask=mask, ref_logprobs=ref if beta > 0 else None,
                             clip_eps=0.2, clip_eps_high=eps_high, beta=beta, loss_type=agg)
            else:
                loss, _ = fn(logp, old, adv, mask=mask, clip_eps=0.2, clip_eps_high=eps_high,
                             agg=agg)
            (grad,) = torch.autograd.grad(loss, logp)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name, grad, want, None, rtol=1e-6, atol=1e-9)
    return problems


def compare_value_loss_grad(fn, seed=0):
    """Autograd gradient of value_loss w.r.t. the values against ``ref_value_loss_grad``."""
    gen = torch.Generator().manual_seed(seed)
    problems = []
    B, T = 4, 6
    for clip_range, mask_kind in itertools.product([0.2, 0.5], ["none", "any_empty"]):
        old = torch.randn(B, T, generator=gen, dtype=torch.float64)  # (B, T)
        values = old + torch.randn(B, T, generator=gen, dtype=torch.float64) * 0.4
        returns = old + torch.randn(B, T, generator=gen, dtype=torch.float64)
        mask = None if mask_kind == "none" else random_mask(gen, B, T, "any", empty_row=1)
        name = f"value_loss grad clip_range={clip_range} mask={mask_kind}"
        want = ref_value_loss_grad(values.tolist(), old.tolist(), returns.tolist(),
                                   None if mask is None else mask.tolist(), clip_range)
        values = values.clone().requires_grad_(True)
        try:
            loss, _ = fn(values, old, returns, mask=mask, clip_range=clip_range)
            (grad,) = torch.autograd.grad(loss, values)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: raised {exc!r}")
            continue
        problems += _diff_tensor(name, grad, want, None, rtol=1e-6, atol=1e-9)
    return problems


# ----------------------------------------------------------------------------------------
# checker for the gradient property of the clipped surrogate
# ----------------------------------------------------------------------------------------


def clip_gradient_violations(loss_fn, log_ratio, adv, clip_eps=0.2, clip_eps_high=None):
    """Gradient of ``loss_fn`` (grpo_loss or ppo_policy_loss) w.r.t. the log-probs, one
    token per sequence (B, 1), no KL term.

    Where the clip is active and the advantage pushes further out (ratio > 1 + eps_high
    with A > 0, or ratio < 1 - eps with A < 0) the gradient must be exactly 0; everywhere
    else with A != 0 it must be -ratio * A / B (every aggregation divides by B here).
    Returns the list of violations.
    """
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    B = log_ratio.shape[0]
    old = torch.full((B, 1), -1.0, dtype=torch.float64)  # (B, 1)
    logp = (old + log_ratio.reshape(B, 1)).clone().requires_grad_(True)  # (B, 1)
    loss, _ = loss_fn(logp, old, adv.reshape(B, 1), clip_eps=clip_eps,
                      clip_eps_high=clip_eps_high)
    (grad,) = torch.autograd.grad(loss, logp)
    out = []
    for b in range(B):
        ratio, a, g = math.exp(float(log_ratio[b])), float(adv[b]), float(grad[b, 0])
        pushing_out = (ratio > 1 + eps_high and a > 0) or (ratio < 1 - clip_eps and a < 0)
        if pushing_out and g != 0.0:
            out.append(f"token {b}: ratio {ratio:.4f}, A {a:.4f}: clip active, "
                       f"gradient {g!r} should be exactly 0")
        if not pushing_out and a != 0.0:
            want = -ratio * a / B
            if not _close(g, want, 1e-6, 1e-12):
                out.append(f"token {b}: ratio {ratio:.4f}, A {a:.4f}: gradient {g!r} "
                           f"should be -ratio*A/B = {want!r}")
    return out


# ----------------------------------------------------------------------------------------
# the seed notebook's Step 1 cell (shared/seed-notebook-04-grpo.txt), verbatim except
# for its import line
# ----------------------------------------------------------------------------------------

SEED_STEP1_IMPORT = "from src.training.grpo_trainer import compute_group_advantages, grpo_loss"
SEED_STEP1_CELL = """\
from src.training.grpo_trainer import compute_group_advantages, grpo_loss
print('GRPO functions imported')

# Example: 8 completions, binary rewards (correct/wrong)
rewards = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
advantages = compute_group_advantages(rewards)

print('Group rewards:    ', rewards.tolist())
print('Group advantages: ', [round(a, 3) for a in advantages.tolist()])
print(f'Mean: {advantages.mean():.6f} (should be 0)')
print(f'Std:  {advantages.std():.6f} (should be ~1)')
"""


def seed_step1_source():
    """The Step 1 cell with only its import line changed to course_lib."""
    return SEED_STEP1_CELL.replace(
        SEED_STEP1_IMPORT, "from course_lib import compute_group_advantages, grpo_loss")


# ----------------------------------------------------------------------------------------
# running the seed notebook's Step 1 cell and checking what it prints
# ----------------------------------------------------------------------------------------


def run_seed_step1(compute_group_advantages=None):
    """Execute the Step 1 cell and return what it printed.

    With no argument the cell runs verbatim except for its import line (which imports
    from course_lib). With a function, the import line is dropped and that function is
    used instead (how ``test_mutations.py`` shows the check can fail).
    """
    import contextlib
    import io

    namespace = {"torch": torch}  # the notebook's set-up cell imports torch
    if compute_group_advantages is None:
        source = seed_step1_source()
    else:
        source = SEED_STEP1_CELL.replace(SEED_STEP1_IMPORT, "")
        namespace.update(compute_group_advantages=compute_group_advantages, grpo_loss=None)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<seed notebook 04, Step 1>", "exec"), namespace)  # noqa: S102
    return out.getvalue()


def seed_step1_problems(stdout):
    """What is wrong with the Step 1 cell's output (empty list: it prints mean 0 and
    std close to 1, as the cell itself says it should)."""
    lines = {line.split(":")[0].strip(): line for line in stdout.splitlines() if ":" in line}
    problems = []
    try:
        mean = float(lines["Mean"].split(":")[1].split()[0])
        std = float(lines["Std"].split(":")[1].split()[0])
    except (KeyError, IndexError, ValueError):
        return [f"could not find 'Mean: ...' and 'Std: ...' lines in {stdout!r}"]
    if abs(mean) > 1e-6:
        problems.append(f"printed mean {mean}, should be 0")
    # the unbiased std of the advantages is std_g / (std_g + eps) = 0.999998 for eps=1e-6
    if abs(std - 1.0) > 1e-4:
        problems.append(f"printed std {std}, should be close to 1 (unbiased group std)")
    return problems


#: hypothesis settings for every property test: fast and reproducible (the same examples
#: on every run, no example database on disk)
HYPOTHESIS_SETTINGS = dict(max_examples=50, deadline=None, derandomize=True, database=None)

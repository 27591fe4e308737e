"""Checks used by the locked test cells of the assignments (ps1, ps2, ps3).

Explained in the book's Exercises chapter. The test cells of ``solutions/<id>/<id>.ipynb``
import this module; the inputs of hidden tests live in the notebooks, not here.

Design:

* **Snapshot before student code runs.** The first (locked) cell of every assignment
  imports this module, which captures at import time every function the checks rely on
  (``torch.tensor``, ``Tensor.tolist``, ``math.isclose``, ``sys.setprofile``, ...). A
  student cell that later replaces ``torch.allclose``, ``numpy.testing`` or even
  ``torch.Tensor.tolist`` does not change what the checks compute.
* **Independent references.** Expected values are computed in plain Python (floats and
  loops), not with course_lib or torch, so patching those cannot fake a pass.
* **No delegation.** :func:`call_student` runs the student's function under a profile
  hook; if the reference implementation in course_lib is executed during the call (by any
  alias), or the student's code is a byte-for-byte copy of it, the check fails and the
  test cell earns no points.
* **Messages that teach.** A failed check raises :class:`CheckFailed` (an AssertionError)
  that says what is wrong and hints at the likely cause.
"""

from __future__ import annotations

import builtins
import math
import random
import sys
import types

import torch

import course_lib.bandit as _bandit
import course_lib.grpo as _grpo
import course_lib.ppo as _ppo
import course_lib.surrogate as _surrogate

__all__ = [
    "CheckFailed",
    "call_student",
    "as_floats",
    "check_group_advantages",
    "check_degenerate_groups",
    "check_prob_degenerate",
    "check_simulation",
    "check_clipped_surrogate",
    "check_group_diversity",
    "check_bandit_trainer",
    "check_bandit_seeding",
    "random_rewards",
    "random_surrogate_batch",
]

# ----------------------------------------------------------------------------------------
# Snapshot of everything the checks use (taken when the setup cell imports this module).
_Tensor = torch.Tensor
_tensor = torch.tensor
_tolist = torch.Tensor.tolist
_detach = torch.Tensor.detach
_float64 = torch.float64
_float32 = torch.float32
_isinstance = builtins.isinstance
_len = builtins.len
_abs = builtins.abs
_float = builtins.float
_isclose = math.isclose
_isfinite = math.isfinite
_sqrt = math.sqrt
_exp = math.exp
_Random = random.Random
_setprofile = sys.setprofile
_getprofile = sys.getprofile
_FunctionType = types.FunctionType
_CodeType = types.CodeType

#: Reference implementations a submission may not call, by assignment function name.
#: Captured as code objects now, so replacing the module attributes later changes nothing.
_FORBIDDEN = {
    "group_advantages": [_grpo.compute_group_advantages],
    "clipped_surrogate_loss": [
        _grpo.grpo_loss, _ppo.ppo_policy_loss, _surrogate.clipped_surrogate,
        _surrogate.aggregate,
    ],
    "train_bandit_grpo": [
        _bandit.train_bandit_grpo, _bandit.grpo_bandit, _bandit.grpo_bandit_batch,
        _bandit._grpo_runs,
    ],
}
_FORBIDDEN_CODES = {
    name: [(f.__module__ + "." + f.__qualname__, f.__code__) for f in funcs]
    for name, funcs in _FORBIDDEN.items()
}


class CheckFailed(AssertionError):
    """A check of a student's function failed; the message says why."""


def _codes(code: types.CodeType):
    """A code object and every code object nested in it (inner functions, lambdas)."""
    yield code
    for const in code.co_consts:
        if _isinstance(const, _CodeType):
            yield from _codes(const)


def call_student(func, *args, name: str | None = None, watch: bool = True, **kwargs):
    """Call ``func(*args, **kwargs)`` and return its result, failing the check if it
    delegates to course_lib's reference implementation of the same function.

    ``watch=False`` skips the profile hook (it roughly doubles the run time of a training
    loop); checks that call a function several times watch the first call only.
    Any exception of the student's code becomes a :class:`CheckFailed` that names it.
    """
    name = name or getattr(func, "__name__", "your function")
    if not callable(func):
        raise CheckFailed(f"{name} is not a function; did you overwrite it by accident?")
    forbidden = _FORBIDDEN_CODES.get(name, [])
    if _isinstance(func, _FunctionType):
        for own in _codes(func.__code__):
            for ref_name, ref in forbidden:
                if own.co_code == ref.co_code and own.co_names == ref.co_names:
                    raise CheckFailed(
                        f"{name} is a copy of {ref_name}: write your own implementation "
                        f"(this test gives no points for copying the reference)"
                    )
    codes = {code: ref_name for ref_name, code in forbidden} if watch else {}
    seen: list[str] = []

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            seen.append(codes[frame.f_code])

    previous = _getprofile()
    _setprofile(hook if codes else previous)
    try:
        result = func(*args, **kwargs)
    except NotImplementedError:
        raise CheckFailed(
            f"{name} is not implemented yet: replace `raise NotImplementedError()` with "
            f"your code"
        ) from None
    except CheckFailed:
        raise
    except Exception as err:  # the student's code failed: say how
        raise CheckFailed(f"{name} raised {type(err).__name__}: {err}") from None
    finally:
        _setprofile(previous)
    if seen:
        raise CheckFailed(
            f"{name} calls course_lib's reference implementation ({seen[0]}); this exercise "
            f"asks you to write it yourself, so this test gives no points"
        )
    return result


def as_floats(x, what: str):
    """A tensor (any shape) -> nested lists of Python floats; clear error otherwise."""
    if not _isinstance(x, _Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise CheckFailed(f"{what} should be a floating-point tensor, got dtype {x.dtype}")
    return _tolist(_detach(x).to(_float64))


def _flat(nested):
    if _isinstance(nested, list):
        out = []
        for item in nested:
            out.extend(_flat(item))
        return out
    return [nested]


def _groups(nested):
    """Nested lists (..., G) -> list of groups (lists of G floats)."""
    if _isinstance(nested, list) and nested and not _isinstance(nested[0], list):
        return [nested]
    out = []
    for item in nested:
        out.extend(_groups(item))
    return out


def _shape(nested):
    shape = []
    while _isinstance(nested, list):
        shape.append(_len(nested))
        nested = nested[0] if nested else None
    return tuple(shape)


def _fmt(xs, n=6):
    xs = list(xs)
    body = ", ".join(f"{v:.3f}" for v in xs[:n])
    return "[" + body + (", ..." if _len(xs) > n else "") + "]"


def random_rewards(shape, seed: int, binary: bool = True, dtype=torch.float32):
    """A reward tensor of ``shape`` drawn with Python's own generator (no torch RNG)."""
    rng = _Random(seed)
    n = 1
    for s in shape:
        n *= s
    vals = [_float(rng.random() < 0.5) if binary else rng.gauss(0.0, 2.0) for _ in range(n)]
    return _tensor(vals, dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------------------
# ps1: group advantages
def _ref_group(r, eps, std_kind="unbiased"):
    """Plain-Python group advantages of one group (the assignment's definition)."""
    G = _len(r)
    mean = sum(r) / G
    if all(v == r[0] for v in r):
        return [0.0] * G
    denom = G - 1 if std_kind == "unbiased" else G
    std = _sqrt(sum((v - mean) ** 2 for v in r) / denom)
    return [(v - mean) / (std + eps) for v in r]


def _close(a, b, tol):
    return all(_isclose(x, y, rel_tol=tol, abs_tol=tol) for x, y in zip(a, b, strict=True))


def check_group_advantages(func, rewards, eps: float = 1e-6, tol: float = 1e-4) -> None:
    """``func(rewards, eps)`` must equal the group-normalised advantages (unbiased std)."""
    rin = as_floats(rewards, "rewards")
    out = call_student(func, rewards.clone(), eps, name="group_advantages")
    got = as_floats(out, "group_advantages' result")
    if tuple(out.shape) != tuple(rewards.shape):
        raise CheckFailed(
            f"group_advantages returned shape {tuple(out.shape)} for rewards of shape "
            f"{tuple(rewards.shape)}: it must return one advantage per reward (same shape); "
            f"did you reduce over a dim or forget keepdim=True?"
        )
    groups_in, groups_out = _groups(rin), _groups(got)
    for i, (r, a) in enumerate(zip(groups_in, groups_out, strict=True)):
        if not all(_isfinite(v) for v in a):
            raise CheckFailed(
                f"group {i} (rewards {_fmt(r)}) has non-finite advantages {_fmt(a)}: "
                f"a group of equal rewards has std 0; its advantages must be exactly 0"
            )
        expected = _ref_group(r, eps)
        if _close(a, expected, tol):
            continue
        if _abs(sum(a)) > 1e-3 * _len(a):
            raise CheckFailed(
                f"the advantages of each group should sum to 0; group {i} (rewards "
                f"{_fmt(r)}) sums to {sum(a):.3f}. Did you subtract the mean of the whole "
                f"tensor, or take the mean over the wrong dim, instead of each group's mean "
                f"along the last dim?"
            )
        if _close(a, _ref_group(r, eps, "population"), tol):
            raise CheckFailed(
                f"group {i}: your advantages use the population std (divide by G); use the "
                f"unbiased std (divide by G - 1, torch.std's default), as TRL and verl do. "
                f"Expected {_fmt(expected)}, got {_fmt(a)}"
            )
        centered = [v - sum(r) / _len(r) for v in r]
        if _close(a, centered, tol):
            raise CheckFailed(
                f"group {i}: you subtract the group mean but do not divide by the group's "
                f"std (+ eps). Expected {_fmt(expected)}, got {_fmt(a)}"
            )
        raise CheckFailed(
            f"group {i} (rewards {_fmt(r)}): expected advantages {_fmt(expected)}, got "
            f"{_fmt(a)}. Is the std taken per group (dim=-1) and is eps added to the std?"
        )


def check_degenerate_groups(func, rewards, eps: float = 1e-6) -> None:
    """Groups whose rewards are all equal must get advantages exactly 0 (|A| < 1e-6)."""
    rin = as_floats(rewards, "rewards")
    out = call_student(func, rewards.clone(), eps, name="group_advantages")
    got = as_floats(out, "group_advantages' result")
    if tuple(out.shape) != tuple(rewards.shape):
        raise CheckFailed(
            f"group_advantages returned shape {tuple(out.shape)} for rewards of shape "
            f"{tuple(rewards.shape)}"
        )
    for i, (r, a) in enumerate(zip(_groups(rin), _groups(got), strict=True)):
        if all(v == r[0] for v in r) and not all(_isfinite(v) and _abs(v) < 1e-6 for v in a):
            raise CheckFailed(
                f"group {i} has equal rewards {_fmt(r)} but advantages {_fmt(a)}: such a "
                f"group carries no signal and its advantages must be exactly 0. Rounding "
                f"makes r - mean(r) tiny but not 0, and tiny / (0 + eps) is not small: "
                f"set these groups to 0 explicitly (e.g. with torch.where)"
            )


def _ref_prob_degenerate(p, G):
    return p**G + (1.0 - p) ** G


def _as_number(x, what):
    if _isinstance(x, _Tensor):
        if x.numel() != 1:
            raise CheckFailed(f"{what} should be a number, got a tensor of shape "
                              f"{tuple(x.shape)}")
        return _float(_tolist(_detach(x).reshape(())))
    if _isinstance(x, (int, float)):
        return _float(x)
    raise CheckFailed(f"{what} should be a number (float), got {type(x).__name__}")


def check_prob_degenerate(func, cases, tol: float = 1e-9) -> None:
    """``func(p, G)`` must equal p^G + (1-p)^G for each (p, G) in ``cases``."""
    for p, G in cases:
        got = _as_number(call_student(func, p, G, name="prob_degenerate_group"),
                         f"prob_degenerate_group({p}, {G})")
        want = _ref_prob_degenerate(p, G)
        if _isclose(got, want, rel_tol=1e-6, abs_tol=tol):
            continue
        hint = "a group has no signal when ALL G rewards are equal: all 1 or all 0"
        if _isclose(got, p**G, abs_tol=tol):
            hint = "you counted the all-success groups (p^G) but not the all-failure ones"
        elif _isclose(got, (1 - p) ** G, abs_tol=tol):
            hint = "you counted the all-failure groups but not the all-success ones (p^G)"
        elif _isclose(got, 1 - want, abs_tol=tol):
            hint = "that is the probability that the group DOES carry signal"
        raise CheckFailed(
            f"prob_degenerate_group({p}, {G}) = {got:.6g}, expected {want:.6g}: {hint}"
        )


def check_simulation(simulate, prob, cases, n_groups: int = 20_000, seed: int = 0) -> None:
    """``simulate(p, G, n_groups, seed)`` returns the share of degenerate groups among
    ``n_groups`` simulated groups; it must agree with the exact probability (binomial
    tolerance of 4.5 standard errors), be reproducible, and really sample."""
    for p, G in cases:
        share = _as_number(call_student(simulate, p, G, n_groups, seed,
                                        name="simulate_degenerate_share"),
                           f"simulate_degenerate_share({p}, {G}, ...)")
        exact = _ref_prob_degenerate(p, G)
        se = _sqrt(exact * (1 - exact) / n_groups) + 1.0 / n_groups
        if _abs(share - exact) > 4.5 * se:
            raise CheckFailed(
                f"simulate_degenerate_share({p}, {G}, n_groups={n_groups}) = {share:.4f}, "
                f"but the exact probability is {exact:.4f} (a simulation of {n_groups} "
                f"groups should be within {4.5 * se:.4f}). Does each group draw G rewards "
                f"that are 1 with probability p, and count groups that are all 0 or all 1?"
            )
        mine = _as_number(prob(p, G), "prob_degenerate_group") if prob is not None else None
        if mine is not None and _abs(share - mine) > 4.5 * se:
            raise CheckFailed(
                f"your simulation ({share:.4f}) and your prob_degenerate_group ({mine:.4f}) "
                f"disagree for p={p}, G={G}: one of them is wrong"
            )
    p, G = cases[0]
    a = _as_number(call_student(simulate, p, G, 2000, 1, name="simulate_degenerate_share"),
                   "share")
    b = _as_number(call_student(simulate, p, G, 2000, 1, name="simulate_degenerate_share"),
                   "share")
    c = _as_number(call_student(simulate, p, G, 2000, 2, name="simulate_degenerate_share"),
                   "share")
    if a != b:
        raise CheckFailed("simulate_degenerate_share gives different results for the same "
                          "seed: create a torch.Generator seeded with `seed` and use it")
    if a == c and 0.01 < _ref_prob_degenerate(p, G) < 0.99:
        raise CheckFailed("simulate_degenerate_share gives the same share for seeds 1 and 2: "
                          "it should sample rewards with the given seed, not compute the "
                          "formula")
    if _abs(a * 2000 - round(a * 2000)) > 1e-2:
        raise CheckFailed("simulate_degenerate_share(..., n_groups=2000, ...) should be a "
                          "count divided by 2000 (a share of simulated groups)")


# ----------------------------------------------------------------------------------------
# ps2: the clipped surrogate and group diversity
_autograd_grad = torch.autograd.grad
_requires_grad_ = torch.Tensor.requires_grad_
_min = builtins.min
_max = builtins.max


def _surrogate_variants(lp, old, adv, mask, eps):
    """Plain-Python losses of the correct definition and of typical mistakes, and the
    gradient of the correct one w.r.t. logprobs. Inputs are nested lists (B, T)/(B,)."""
    B, T = _len(lp), _len(lp[0])

    def per_token(i, t, clip=True, pess=True):
        r = _exp(lp[i][t] - old[i][t])
        a = adv[i]
        u = r * a
        c = _min(_max(r, 1 - eps), 1 + eps) * a if clip else u
        return -(_min(u, c) if pess else _max(u, c))

    def seq_mean(fn, use_mask=True):
        tot, n_seq = 0.0, 0
        for i in range(B):
            idx = [t for t in range(T) if mask[i][t] or not use_mask]
            if not idx:
                continue
            tot += sum(fn(i, t) for t in idx) / _len(idx)
            n_seq += 1
        return tot / n_seq

    real = [(i, t) for i in range(B) for t in range(T) if mask[i][t]]
    out = {
        "correct": seq_mean(per_token),
        "token_mean": sum(per_token(i, t) for i, t in real) / _len(real),
        "mask_ignored": seq_mean(per_token, use_mask=False),
        "negated": -seq_mean(per_token),
        "no_clip": seq_mean(lambda i, t: per_token(i, t, clip=False)),
        "max": seq_mean(lambda i, t: per_token(i, t, pess=False)),
    }
    n_seq = sum(1 for i in range(B) if any(mask[i]))
    grad = [[0.0] * T for _ in range(B)]
    for i in range(B):
        n = sum(1 for t in range(T) if mask[i][t])
        for t in range(T):
            if not mask[i][t]:
                continue
            r = _exp(lp[i][t] - old[i][t])
            a = adv[i]
            u, c = r * a, _min(_max(r, 1 - eps), 1 + eps) * a
            if u <= c:  # the unclipped term is the one min() uses: d(-r a)/d logp = -r a
                grad[i][t] = -r * a / (n * n_seq)
    return out, grad


_SURROGATE_HINTS = {
    "token_mean": "you averaged over all real tokens of the batch at once (DAPO's "
                  "token-mean); GRPO averages each sequence over its own real tokens first, "
                  "then averages the sequences",
    "mask_ignored": "padding counts: average only over tokens where mask is 1",
    "negated": "the sign is flipped: return the loss to MINIMISE, i.e. minus the objective",
    "no_clip": "the ratio is never clipped: use clamp(ratio, 1 - clip_eps, 1 + clip_eps)",
    "max": "use the pessimistic min(ratio * A, clip(ratio) * A), not the max",
}


def check_clipped_surrogate(func, logprobs, old_logprobs, advantages, mask, clip_eps=0.2,
                            tol=1e-4, check_grad=False) -> None:
    """``func(logprobs, old_logprobs, advantages, mask, clip_eps)`` must equal the GRPO
    clipped surrogate (per-sequence token mean, then mean over sequences, negated); with
    ``check_grad`` its gradient w.r.t. logprobs must match too (0 where clipped)."""
    lp_in = _requires_grad_(_detach(logprobs).clone())
    lp, old = as_floats(logprobs, "logprobs"), as_floats(old_logprobs, "old_logprobs")
    adv, m = as_floats(advantages, "advantages"), _tolist(mask)
    loss = call_student(func, lp_in, old_logprobs.clone(), advantages.clone(), mask.clone(),
                        clip_eps, name="clipped_surrogate_loss")
    if not _isinstance(loss, _Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if _isinstance(loss, _Tensor) else type(loss).__name__
        raise CheckFailed(f"clipped_surrogate_loss should return a scalar tensor (0-dim), "
                          f"got {shape}")
    got = _tolist(_detach(loss).to(_float64))
    variants, grad = _surrogate_variants(lp, old, adv, m, clip_eps)
    want = variants["correct"]
    if not _isclose(got, want, rel_tol=tol, abs_tol=tol):
        for name, hint in _SURROGATE_HINTS.items():
            if _isclose(got, variants[name], rel_tol=tol, abs_tol=tol) and not _isclose(
                variants[name], want, rel_tol=tol, abs_tol=tol
            ):
                raise CheckFailed(f"clipped_surrogate_loss = {got:.5f}, expected {want:.5f}: "
                                  f"{hint}")
        raise CheckFailed(
            f"clipped_surrogate_loss = {got:.5f}, expected {want:.5f}. Per token: ratio = "
            f"exp(logprobs - old_logprobs), loss = -min(ratio * A, clip(ratio) * A) with A "
            f"the sequence's advantage; then mean over each sequence's real tokens, then "
            f"mean over sequences"
        )
    if not check_grad:
        return
    if not loss.requires_grad:
        raise CheckFailed("the loss has no gradient: keep it a function of `logprobs` "
                          "(no .item(), .detach() or torch.tensor(...) on the way)")
    (g,) = _autograd_grad(loss, lp_in, allow_unused=True)
    if g is None:
        raise CheckFailed("the loss does not depend on `logprobs`")
    g = _tolist(g.to(_float64))
    for i in range(_len(grad)):
        for t in range(_len(grad[i])):
            if not _isclose(g[i][t], grad[i][t], rel_tol=1e-3, abs_tol=1e-6):
                where = ("a clipped token: its gradient must be exactly 0"
                         if grad[i][t] == 0.0 and m[i][t] else
                         "a padding token: it must not get any gradient" if not m[i][t] else
                         "an unclipped token")
                raise CheckFailed(
                    f"gradient w.r.t. logprobs[{i}, {t}] is {g[i][t]:.5f}, expected "
                    f"{grad[i][t]:.5f} ({where}). The min() of the unclipped and the clipped "
                    f"term must stay in the graph; do not clamp the log-ratio itself"
                )


def check_group_diversity(func, samples, tol=1e-6) -> None:
    """``func(samples)`` for integer samples (..., G) must return the share of distinct
    answers of each group, shape (...), e.g. [3, 3, 5, 7] -> 0.75."""
    vals = _tolist(samples)
    groups = _groups(vals)
    want = [_len(set(g)) / _len(g) for g in groups]
    out = call_student(func, samples.clone(), name="group_diversity")
    if _isinstance(out, (int, float)) and samples.dim() == 1:
        got = [_float(out)]
    elif _isinstance(out, _Tensor):
        if tuple(out.shape) != tuple(samples.shape[:-1]):
            raise CheckFailed(
                f"group_diversity returned shape {tuple(out.shape)} for samples of shape "
                f"{tuple(samples.shape)}: one value per group, shape {tuple(samples.shape[:-1])}"
            )
        got = _flat(_tolist(out.to(_float64)))
    else:
        raise CheckFailed(f"group_diversity should return a tensor, got {type(out).__name__}")
    for i, (g, w, x) in enumerate(zip(groups, want, got, strict=True)):
        if _isclose(x, w, abs_tol=tol):
            continue
        hint = "count the distinct values of the group and divide by G"
        if _isclose(x, w * _len(g), abs_tol=tol):
            hint = "that is the number of distinct answers; return the share (divide by G)"
        elif _isclose(x, 1 - w, abs_tol=tol):
            hint = "that is the share of repeats; return the share of distinct answers"
        raise CheckFailed(f"group {i} = {g}: expected diversity {w:.3f}, got {x:.3f}: {hint}")


def random_surrogate_batch(B: int, T: int, seed: int, spread: float = 0.5,
                           empty_row: bool = False):
    """(logprobs, old_logprobs, advantages, mask) with ratios in exp(+-spread), random
    right-padded lengths (padding holds junk values), drawn with Python's generator."""
    rng = _Random(seed)
    old = [[-rng.uniform(0.1, 3.0) for _ in range(T)] for _ in range(B)]
    lp = [[o + rng.uniform(-spread, spread) for o in row] for row in old]
    adv = [rng.gauss(0.0, 1.0) for _ in range(B)]
    lengths = [rng.randint(1, T) for _ in range(B)]
    if empty_row:
        lengths[rng.randrange(B)] = 0
    mask = [[1.0 if t < n else 0.0 for t in range(T)] for n in lengths]
    for i in range(B):
        for t in range(lengths[i], T):
            lp[i][t] = -50.0 + rng.uniform(0, 10)  # junk on padding
    return (_tensor(lp, dtype=_float32), _tensor(old, dtype=_float32),
            _tensor(adv, dtype=_float32), _tensor(mask, dtype=_float32))


# ----------------------------------------------------------------------------------------
# ps3: GRPO on a bandit
def check_bandit_trainer(func, arm_probs, seeds, min_success=None, threshold=0.9,
                         **kwargs) -> None:
    """``func(arm_probs, seed=s, **kwargs)`` must return the final policy's arm
    probabilities (K,) and put >= ``threshold`` on the best arm in at least ``min_success``
    of the runs (default: all)."""
    p = [_float(v) for v in arm_probs]
    K = _len(p)
    best = p.index(_max(p))
    need = _len(seeds) if min_success is None else min_success
    ok, report = 0, []
    for n, s in enumerate(seeds):
        out = call_student(func, _tensor(p), seed=s, name="train_bandit_grpo", watch=n == 0,
                           **kwargs)
        probs = as_floats(out, "train_bandit_grpo's result")
        if tuple(out.shape) != (K,):
            raise CheckFailed(f"train_bandit_grpo returned shape {tuple(out.shape)} for {K} "
                              f"arms; return the final policy's probabilities, shape ({K},)")
        if _min(probs) < 0 or not _isclose(sum(probs), 1.0, abs_tol=1e-4):
            raise CheckFailed(f"train_bandit_grpo returned {_fmt(probs)}, which is not a "
                              f"probability vector (sum {sum(probs):.4f}): return "
                              f"softmax(logits), not the logits")
        ok += probs[best] >= threshold
        report.append(f"seed {s}: P(best) = {probs[best]:.3f}")
    if ok < need:
        settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default settings"
        raise CheckFailed(
            f"on a bandit with success probabilities {_fmt(p, 12)} ({settings}) the best arm "
            f"(index {best}) got probability >= {threshold} in {ok} of {_len(seeds)} runs, "
            f"need {need} ({'; '.join(report)}). Check the sign of the loss (minimise minus "
            f"the objective), that advantages come from compute-once group statistics, that "
            f"pi_old is fixed while you take the mu updates, and that you use Adam with lr"
        )


def check_bandit_seeding(func, arm_probs, **kwargs) -> None:
    """Same seed -> identical result; different seeds -> different results."""
    a = call_student(func, _tensor(arm_probs), seed=3, name="train_bandit_grpo", **kwargs)
    b = call_student(func, _tensor(arm_probs), seed=3, name="train_bandit_grpo", watch=False,
                     **kwargs)
    c = call_student(func, _tensor(arm_probs), seed=4, name="train_bandit_grpo", watch=False,
                     **kwargs)
    fa, fb, fc = (as_floats(x, "train_bandit_grpo's result") for x in (a, b, c))
    if fa != fb:
        raise CheckFailed("two runs with seed=3 gave different results: draw every arm and "
                          "reward from one torch.Generator().manual_seed(seed)")
    if fa == fc:
        raise CheckFailed("seeds 3 and 4 gave identical results: the pulls and rewards must "
                          "be drawn with the generator seeded by `seed`")

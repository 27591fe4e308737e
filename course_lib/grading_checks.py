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
    "random_rewards",
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


def call_student(func, *args, name: str | None = None, **kwargs):
    """Call ``func(*args, **kwargs)`` and return its result, failing the check if it
    delegates to course_lib's reference implementation of the same function.

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
    codes = {code: ref_name for ref_name, code in forbidden}
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

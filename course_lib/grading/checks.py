"""The checks of the assignments (ps1, ps2, ps3): one comparison code, two transports.

Explained in the book's Exercises chapter and in docs/grading.md. Each check calls the
student's function through a *caller* and compares what comes back, as plain data, with
a reference computed here (in plain Python, or in torch for ps3's GRPO replay); a failure
raises :class:`CheckFailed` whose message says what is wrong and hints why.

* In the student's own kernel (the notebooks' test cells: quick feedback, no security)
  the caller is :class:`LocalCaller`: ``check_group_advantages(group_advantages, rewards)``
  calls the function in-process and encodes its result exactly as the grading worker
  does.
* When grading (``python -m course_lib.grading``) the caller is the trusted harness's
  (:mod:`.harness`): the function runs in a sandboxed worker, inputs are sent at the call,
  results come back as data and are compared in the grader's process. The expected values
  and this module never enter the student's process.

The declarations in ``solutions/<id>/checks.toml`` name these checks and their inputs;
:data:`INPUTS` are the input generators both sides evaluate.
"""

from __future__ import annotations

import linecache
import math
import os
import random
import types

import torch

from course_lib.bandit import BanditEnv, BernoulliRewards, make_bandit

from . import rules
from .worker import call_function, encode

__all__ = [
    "CheckFailed", "Result", "LocalCaller", "CHECKS", "INPUTS",
    "check_equal", "check_group_advantages", "check_degenerate_groups",
    "check_prob_degenerate", "check_simulation", "check_clipped_surrogate",
    "check_group_diversity", "check_bandit_trainer", "check_bandit_seeding",
    "check_bandit_grpo_update", "random_rewards", "random_surrogate_batch",
    "surrogate_batch", "random_ints",
]


class CheckFailed(AssertionError):
    """A check failed. ``detail`` may quote inputs and values; ``hint`` says why without
    them (what a failing hidden test shows)."""

    def __init__(self, detail: str, hint: str = ""):
        super().__init__(f"{detail}: {hint}" if hint else detail)
        self.detail, self.hint = detail, hint or detail

    def hidden(self) -> str:
        return f"a hidden test failed: {self.hint}"


# --------------------------------------------------------------------------- results
_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "int", "long"}


class Result:
    """What a student function returned, as untrusted plain data; validated on use."""

    def __init__(self, fn: str, value: object, grad: object = None, grad_error=None):
        self.fn, self.value, self.grad, self.grad_error = fn, value, grad, grad_error

    @staticmethod
    def _kind(v: object) -> str:
        return v.get("t", "?") if isinstance(v, dict) else "?"

    def _describe(self, v: object) -> str:
        kind = self._kind(v)
        if kind == "object":
            return str(v.get("type", "an object"))[:80]
        return {"tensor": "a tensor", "float": "a float", "int": "an int", "bool": "a bool",
                "none": "None", "str": "a string", "list": "a list",
                "tuple": "a tuple"}.get(kind, "something unexpected")

    def tensor(self, what: str, floating: bool = True, v: object = None):
        """(shape, flat values) of a tensor result; CheckFailed unless it is a well-formed
        tensor (of a floating dtype when ``floating``)."""
        v = self.value if v is None else v
        if self._kind(v) != "tensor":
            raise CheckFailed(f"{what} should be a torch.Tensor, got {self._describe(v)}")
        dtype, shape, flat = v.get("dtype"), v.get("shape"), v.get("v")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(
                type(s) is int and 0 <= s <= 10**7 for s in shape) and isinstance(flat, list)):
            raise CheckFailed(f"{what} is not a well-formed tensor")
        if len(flat) != math.prod(shape):
            raise CheckFailed(f"{what} is not a well-formed tensor (shape and values differ)")
        if floating and dtype not in _FLOAT_DTYPES:
            raise CheckFailed(f"{what} should be a floating-point tensor, got dtype {dtype}")
        if dtype not in _FLOAT_DTYPES | _INT_DTYPES | {"bool"}:
            raise CheckFailed(f"{what} has an unsupported dtype {dtype!r}")
        want = (bool,) if dtype == "bool" else (int,) if dtype in _INT_DTYPES else (int, float)
        if not all(type(x) in want for x in flat):
            raise CheckFailed(f"{what} is not a well-formed tensor (its values are not all "
                              "numbers)")
        return tuple(shape), [float(x) for x in flat]

    def number(self, what: str) -> float:
        """A float result: a Python number or a tensor of one element."""
        v = self.value
        kind = self._kind(v)
        if kind in ("int", "float") and type(v.get("v")) in (int, float):
            if isinstance(v["v"], int) and abs(v["v"]) >= 2**63:
                raise CheckFailed(f"{what} is out of range")
            return float(v["v"])
        if kind == "tensor":
            shape, flat = self.tensor(what, floating=False)
            if len(flat) != 1:
                raise CheckFailed(f"{what} should be a number, got a tensor of shape {shape}")
            return flat[0]
        raise CheckFailed(f"{what} should be a number (float), got {self._describe(v)}")

    def requires_grad(self) -> bool:
        return self._kind(self.value) == "tensor" and self.value.get("requires_grad") is True


def _shape_of(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _nest(flat: list[float], shape: tuple[int, ...]):
    """Flat values -> nested lists of ``shape``."""
    if not shape:
        return flat[0]
    step = math.prod(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _groups(flat: list[float], G: int) -> list[list[float]]:
    return [flat[i:i + G] for i in range(0, len(flat), G)] if G else []


def _fmt(xs, n=6) -> str:
    xs = list(xs)
    body = ", ".join(f"{v:.3f}" for v in xs[:n])
    return "[" + body + (", ..." if len(xs) > n else "") + "]"


def _close(a, b, tol) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=tol, abs_tol=tol)
                                    for x, y in zip(a, b, strict=True))


# --------------------------------------------------------------------------- callers
class LocalCaller:
    """Calls the student's functions in this process (the notebooks' test cells).

    Arguments go through the same encoding as when grading (tensors are copied, the
    function gets fresh ones), environments are passed as they are, and the result is
    encoded like the worker encodes it, so a notebook's test cell and the grader see the
    same data. Before the first call of a function, the rule for graded code
    (:mod:`.rules`) is checked on the cell that defines it.
    """

    def __init__(self, functions: dict[str, object]):
        self.functions = functions
        self._ruled: set[str] = set()

    def call(self, fn: str, *args, grad: int | None = None, **kwargs) -> Result:
        func = self.functions.get(fn)
        if not callable(func):
            raise CheckFailed(f"{fn} is not a function; did you overwrite it by accident?")
        if fn not in self._ruled:
            _check_rule_locally(func, fn)
            self._ruled.add(fn)
        envs: list = []
        request = {"fn": fn, "grad": grad,
                   "args": [_encode_input(a, envs) for a in args],
                   "kwargs": {k: _encode_input(v, envs) for k, v in kwargs.items()}}
        answer = call_function({fn: func}, request, envs)
        return answer_to_result(fn, answer)


def _encode_input(value: object, envs: list) -> dict:
    if isinstance(value, (BanditEnv, BernoulliRewards)):
        envs.append(value)
        return {"t": "env", "index": len(envs) - 1}
    if isinstance(value, torch.Tensor):
        out = encode(value)
        out["requires_grad"] = bool(value.requires_grad)
        return out
    return encode(value)


def env_spec(env: object) -> dict:
    """What a student's worker may know of an environment: no probabilities."""
    if isinstance(env, BanditEnv):
        return {"n_arms": env.n_arms, "budget": env.budget}
    return {"budget": env.budget}


def answer_to_result(fn: str, answer: dict) -> Result:
    """A worker's (or the local call's) answer -> Result, or CheckFailed with a message."""
    if not isinstance(answer, dict):
        raise CheckFailed(f"{fn}: the grader got no answer")
    if answer.get("op") == "raised":
        kind = str(answer.get("type", "Error"))[:80]
        msg = str(answer.get("message", ""))[:300]
        if kind == "NotImplementedError":
            raise CheckFailed(f"{fn} is not implemented yet: replace `raise "
                              f"NotImplementedError()` with your code")
        if kind == "NameError" and f"'{fn}'" in msg:
            raise CheckFailed(f"{fn} is not defined: write it in its answer cell")
        if kind == "NameError":
            raise CheckFailed(
                f"{fn} raised NameError: {msg}",
                "graded code runs with torch imported and nothing from the notebook's "
                "read-only cells; course_lib is not available to it: import what you use "
                "in your answer cell and write the rest yourself")
        if kind == "KeyboardInterrupt":
            raise CheckFailed(f"{fn} did not finish in time and was interrupted")
        raise CheckFailed(f"{fn} raised {kind}: {msg}", f"{fn} raised {kind}")
    if answer.get("op") != "result":
        raise CheckFailed(f"{fn}: the grader got an answer it does not understand")
    return Result(fn, answer.get("value"), answer.get("grad"), answer.get("grad_error"))


def _check_rule_locally(func: object, fn: str) -> None:
    """The rule for graded code, in the student's kernel: on the function's cell, and no
    course_lib object among the globals it uses (they do not exist when grading)."""
    code = getattr(func, "__code__", None)
    if code is None:
        return
    # A notebook cell's source lives in linecache only (IPython registers it under a name
    # that is not a file); a function from a module on disk is not graded code.
    source = "" if os.path.exists(code.co_filename) else \
        "".join(linecache.getlines(code.co_filename))
    found = rules.violations(source) if source else []
    if found:
        raise CheckFailed(rules.message(f"the cell that defines {fn}", found))
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    g = getattr(func, "__globals__", {})
    for name in sorted(names):
        obj = g.get(name)
        module = obj.__name__ if isinstance(obj, types.ModuleType) else \
            getattr(obj, "__module__", None)
        if isinstance(module, str) and module.split(".")[0] == "course_lib":
            raise CheckFailed(
                f"{fn} uses {name} from course_lib, which graded code may not use (when "
                f"grading, course_lib does not exist where your function runs): write it "
                f"yourself")


# --------------------------------------------------------------------------- inputs
def random_rewards(shape, seed: int, binary: bool = True, dtype=torch.float32):
    """A reward tensor of ``shape`` drawn with Python's own generator (no torch RNG)."""
    rng = random.Random(seed)
    n = math.prod(shape)
    vals = [float(rng.random() < 0.5) if binary else rng.gauss(0.0, 2.0) for _ in range(n)]
    return torch.tensor(vals, dtype=dtype).reshape(shape)


def random_ints(shape, high: int, seed: int, low: int = 0):
    """An int64 tensor of ``shape`` with values in [low, high), from Python's generator."""
    rng = random.Random(seed)
    return torch.tensor([rng.randrange(low, high) for _ in range(math.prod(shape))],
                        dtype=torch.int64).reshape(shape)


def surrogate_batch(old_probs, shift, advantages, mask=None):
    """(logprobs, old_logprobs, advantages, mask): ``old = log(old_probs)``, ``logprobs =
    old + shift`` (a number or a (B, T) list), mask all ones unless given."""
    old = torch.log(torch.tensor(old_probs))
    lp = old + (shift if isinstance(shift, (int, float)) else torch.tensor(shift))
    m = torch.ones_like(old) if mask is None else torch.tensor(mask)
    return lp, old, torch.tensor(advantages), m


def random_surrogate_batch(B: int, T: int, seed: int, spread: float = 0.5,
                           empty_row: bool = False, full_mask: bool = False,
                           negate: bool = False, bool_mask: bool = False):
    """(logprobs, old_logprobs, advantages, mask) with ratios in exp(+-spread), random
    right-padded lengths (padding holds junk values), drawn with Python's generator;
    ``full_mask``: no padding; ``negate``: minus the advantages; ``bool_mask``: a bool
    mask."""
    rng = random.Random(seed)
    old = [[-rng.uniform(0.1, 3.0) for _ in range(T)] for _ in range(B)]
    lp = [[o + rng.uniform(-spread, spread) for o in row] for row in old]
    adv = [rng.gauss(0.0, 1.0) for _ in range(B)]
    lengths = [rng.randint(1, T) for _ in range(B)]
    if empty_row:
        lengths[rng.randrange(B)] = 0
    if full_mask:
        lengths = [T] * B
    mask = [[1.0 if t < n else 0.0 for t in range(T)] for n in lengths]
    for i in range(B):
        for t in range(lengths[i], T):
            lp[i][t] = -50.0 + rng.uniform(0, 10)  # junk on padding
    m = torch.tensor(mask, dtype=torch.float32)
    a = torch.tensor(adv, dtype=torch.float32)
    return (torch.tensor(lp, dtype=torch.float32), torch.tensor(old, dtype=torch.float32),
            -a if negate else a, m.bool() if bool_mask else m)


#: Names a declaration's inputs may use (evaluated on the trusted side, see harness).
INPUTS = {"torch": torch, "random_rewards": random_rewards, "random_ints": random_ints,
          "surrogate_batch": surrogate_batch, "random_surrogate_batch": random_surrogate_batch,
          "make_bandit": make_bandit}


# --------------------------------------------------------------------------- generic
def _equal(caller, args: list, expected, tol: float = 0.0, fn: str = "") -> None:
    """``fn(*args)`` must equal ``expected`` (a number, within ``tol``)."""
    res = caller.call(fn, *args)
    got = res.number(f"{fn}{tuple(args)}")
    if not math.isclose(got, float(expected), rel_tol=tol, abs_tol=tol):
        raise CheckFailed(f"{fn}{tuple(args)} = {got!r}, expected {expected!r}",
                          f"{fn} gives a wrong value")


# --------------------------------------------------------------------------- ps1
def _ref_group(r, eps, std_kind="unbiased"):
    """Plain-Python group advantages of one group (the assignment's definition)."""
    G = len(r)
    mean = sum(r) / G
    if all(v == r[0] for v in r):
        return [0.0] * G
    denom = G - 1 if std_kind == "unbiased" else G
    std = math.sqrt(sum((v - mean) ** 2 for v in r) / denom)
    return [(v - mean) / (std + eps) for v in r]


def _advantages_result(caller, fn, rewards, eps):
    res = caller.call(fn, rewards.clone(), eps)
    shape, flat = res.tensor(f"{fn}'s result")
    if shape != _shape_of(rewards):
        raise CheckFailed(
            f"{fn} returned shape {shape} for rewards of shape {_shape_of(rewards)}",
            "it must return one advantage per reward (same shape); did you reduce over a "
            "dim or forget keepdim=True?")
    G = rewards.shape[-1]
    return _groups(rewards.double().reshape(-1).tolist(), G), _groups(flat, G)


def _group_advantages(caller, rewards, eps: float = 1e-6, tol: float = 1e-4,
                      fn: str = "group_advantages") -> None:
    """``fn(rewards, eps)`` must equal the group-normalised advantages (unbiased std)."""
    groups_in, groups_out = _advantages_result(caller, fn, rewards, eps)
    for i, (r, a) in enumerate(zip(groups_in, groups_out, strict=True)):
        if not all(math.isfinite(v) for v in a):
            raise CheckFailed(f"group {i} (rewards {_fmt(r)}) has non-finite advantages "
                              f"{_fmt(a)}", "a group of equal rewards has std 0; its "
                              "advantages must be exactly 0")
        expected = _ref_group(r, eps)
        if _close(a, expected, tol):
            continue
        if abs(sum(a)) > 1e-3 * len(a):
            raise CheckFailed(
                f"group {i} (rewards {_fmt(r)}) sums to {sum(a):.3f}",
                "the advantages of each group should sum to 0. Did you subtract the mean of "
                "the whole tensor, or take the mean over the wrong dim, instead of each "
                "group's mean along the last dim?")
        if _close(a, _ref_group(r, eps, "population"), tol):
            raise CheckFailed(
                f"group {i}: expected {_fmt(expected)}, got {_fmt(a)}",
                "your advantages use the population std (divide by G); use the unbiased std "
                "(divide by G - 1, torch.std's default), as TRL and verl do")
        centered = [v - sum(r) / len(r) for v in r]
        if _close(a, centered, tol):
            raise CheckFailed(f"group {i}: expected {_fmt(expected)}, got {_fmt(a)}",
                              "you subtract the group mean but do not divide by the group's "
                              "std (+ eps)")
        raise CheckFailed(f"group {i} (rewards {_fmt(r)}): expected advantages "
                          f"{_fmt(expected)}, got {_fmt(a)}",
                          "is the std taken per group (dim=-1) and is eps added to the std?")


def _degenerate_groups(caller, rewards, eps: float = 1e-6,
                       fn: str = "group_advantages") -> None:
    """Groups whose rewards are all equal must get advantages exactly 0 (|A| < 1e-6)."""
    groups_in, groups_out = _advantages_result(caller, fn, rewards, eps)
    for i, (r, a) in enumerate(zip(groups_in, groups_out, strict=True)):
        if all(v == r[0] for v in r) and not all(math.isfinite(v) and abs(v) < 1e-6
                                                 for v in a):
            raise CheckFailed(
                f"group {i} has equal rewards {_fmt(r)} but advantages {_fmt(a)}",
                "such a group carries no signal and its advantages must be exactly 0. "
                "Rounding makes r - mean(r) tiny but not 0, and tiny / (0 + eps) is not "
                "small: set these groups to 0 explicitly (e.g. with torch.where)")


def _prob_degenerate(caller, cases, tol: float = 1e-9,
                     fn: str = "prob_degenerate_group") -> None:
    """``fn(p, G)`` must equal p^G + (1-p)^G for each (p, G) in ``cases``."""
    for p, G in cases:
        got = caller.call(fn, p, G).number(f"{fn}({p}, {G})")
        want = p**G + (1.0 - p) ** G
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=tol):
            continue
        hint = "a group has no signal when ALL G rewards are equal: all 1 or all 0"
        if math.isclose(got, p**G, abs_tol=tol):
            hint = "you counted the all-success groups (p^G) but not the all-failure ones"
        elif math.isclose(got, (1 - p) ** G, abs_tol=tol):
            hint = "you counted the all-failure groups but not the all-success ones (p^G)"
        elif math.isclose(got, 1 - want, abs_tol=tol):
            hint = "that is the probability that the group DOES carry signal"
        raise CheckFailed(f"{fn}({p}, {G}) = {got:.6g}, expected {want:.6g}", hint)


def _simulation(caller, cases, n_groups: int = 2000, seed: int = 0,
                fn: str = "simulate_degenerate_share") -> None:
    """``fn(source, G, n_groups)`` draws n_groups groups of G rewards from ``source``
    (success rate p, which it cannot see) and returns the share of all-equal groups. The
    grader knows every reward it handed out, so the share must be exact."""
    for i, (p, G) in enumerate(cases):
        source = BernoulliRewards(p, seed=seed + i, budget=n_groups * G)
        share = caller.call(fn, source, G, n_groups).number(f"{fn}(source, {G}, {n_groups})")
        if source.drawn != n_groups * G:
            raise CheckFailed(f"{fn}(source, G={G}, n_groups={n_groups}) drew "
                              f"{source.drawn} rewards",
                              "draw exactly n_groups * G rewards from the source (e.g. "
                              "source.draw(n_groups * G)) and cut them into groups of G")
        rows = _groups(torch.cat(source.history).tolist(), G)
        exact = sum(all(v == r[0] for v in r) for r in rows) / n_groups
        if abs(share - exact) <= 1e-6:
            continue
        ones = sum(all(v == 1.0 for v in r) for r in rows) / n_groups
        zeros = sum(all(v == 0.0 for v in r) for r in rows) / n_groups
        hint = ("count the groups (G consecutive draws) whose rewards are all equal, all 1 "
                "or all 0, and divide by n_groups")
        if abs(share - ones) <= 1e-6:
            hint = "you counted the all-success groups but not the all-failure ones"
        elif abs(share - zeros) <= 1e-6:
            hint = "you counted the all-failure groups but not the all-success ones"
        elif abs(share - (1 - exact)) <= 1e-6:
            hint = "that is the share of groups that DO carry signal"
        elif abs(share - exact) < 0.05:
            hint = ("close, but not the share of the rewards you drew: count the groups "
                    "you simulated, do not compute a formula")
        raise CheckFailed(f"{fn}(source, G={G}, n_groups={n_groups}) = {share:.4f}; the "
                          f"rewards it drew have {exact:.4f} all-equal groups", hint)


# --------------------------------------------------------------------------- ps2
def _surrogate_variants(lp, old, adv, mask, eps):
    """Plain-Python losses of the correct definition and of typical mistakes, and the
    gradient of the correct one w.r.t. logprobs. Inputs are nested lists (B, T)/(B,)."""
    B, T = len(lp), len(lp[0])

    def per_token(i, t, clip=True, pess=True):
        r = math.exp(lp[i][t] - old[i][t])
        a = adv[i]
        u = r * a
        c = min(max(r, 1 - eps), 1 + eps) * a if clip else u
        return -(min(u, c) if pess else max(u, c))

    def seq_mean(fn, use_mask=True):
        tot, n_seq = 0.0, 0
        for i in range(B):
            idx = [t for t in range(T) if mask[i][t] or not use_mask]
            if not idx:
                continue
            tot += sum(fn(i, t) for t in idx) / len(idx)
            n_seq += 1
        return tot / n_seq

    real = [(i, t) for i in range(B) for t in range(T) if mask[i][t]]
    out = {
        "correct": seq_mean(per_token),
        "token_mean": sum(per_token(i, t) for i, t in real) / len(real),
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
            r = math.exp(lp[i][t] - old[i][t])
            a = adv[i]
            u, c = r * a, min(max(r, 1 - eps), 1 + eps) * a
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


def _clipped_surrogate(caller, batch, clip_eps: float = 0.2, tol: float = 1e-4,
                       check_grad: bool = False, fn: str = "clipped_surrogate_loss") -> None:
    """``fn(logprobs, old_logprobs, advantages, mask, clip_eps)`` must equal the GRPO
    clipped surrogate (per-sequence token mean, then mean over sequences, negated); with
    ``check_grad`` its gradient w.r.t. logprobs must match too (0 where clipped)."""
    logprobs, old_logprobs, advantages, mask = batch
    lp_in = logprobs.detach().clone().requires_grad_(True)
    res = caller.call(fn, lp_in, old_logprobs.clone(), advantages.clone(), mask.clone(),
                      clip_eps, grad=0 if check_grad else None)
    shape, flat = res.tensor(f"{fn}'s result")
    if shape != ():
        raise CheckFailed(f"{fn} should return a scalar tensor (0-dim), got shape {shape}")
    got = flat[0]
    lp, old = logprobs.double().tolist(), old_logprobs.double().tolist()
    adv, m = advantages.double().tolist(), mask.double().tolist()
    variants, grad = _surrogate_variants(lp, old, adv, m, clip_eps)
    want = variants["correct"]
    if not math.isclose(got, want, rel_tol=tol, abs_tol=tol):
        for name, hint in _SURROGATE_HINTS.items():
            if math.isclose(got, variants[name], rel_tol=tol, abs_tol=tol) and not \
                    math.isclose(variants[name], want, rel_tol=tol, abs_tol=tol):
                raise CheckFailed(f"{fn} = {got:.5f}, expected {want:.5f}", hint)
        raise CheckFailed(
            f"{fn} = {got:.5f}, expected {want:.5f}",
            "per token: ratio = exp(logprobs - old_logprobs), loss = -min(ratio * A, "
            "clip(ratio) * A) with A the sequence's advantage; then mean over each "
            "sequence's real tokens, then mean over sequences")
    if not check_grad:
        return
    if not res.requires_grad():
        raise CheckFailed("the loss has no gradient: keep it a function of `logprobs` (no "
                          ".item(), .detach() or torch.tensor(...) on the way)")
    if res.grad is None or Result._kind(res.grad) == "none":
        raise CheckFailed("the loss does not depend on `logprobs`")
    gshape, g = res.tensor("the gradient", v=res.grad)
    if gshape != _shape_of(logprobs):
        raise CheckFailed("the gradient w.r.t. logprobs has the wrong shape")
    B, T = _shape_of(logprobs)
    for i in range(B):
        for t in range(T):
            gi = g[i * T + t]
            if not math.isclose(gi, grad[i][t], rel_tol=1e-3, abs_tol=1e-6):
                where = ("a clipped token: its gradient must be exactly 0"
                         if grad[i][t] == 0.0 and m[i][t] else
                         "a padding token: it must not get any gradient" if not m[i][t] else
                         "an unclipped token")
                raise CheckFailed(
                    f"gradient w.r.t. logprobs[{i}, {t}] is {gi:.5f}, expected "
                    f"{grad[i][t]:.5f} ({where})",
                    f"wrong gradient on {where.split(':')[0]}. The min() of the unclipped "
                    "and the clipped term must stay in the graph; do not clamp the "
                    "log-ratio itself")


def _group_diversity(caller, samples, tol: float = 1e-6, fn: str = "group_diversity") -> None:
    """``fn(samples)`` for integer samples (..., G) must return the share of distinct
    answers of each group, shape (...), e.g. [3, 3, 5, 7] -> 0.75."""
    G = samples.shape[-1]
    groups = _groups(samples.reshape(-1).tolist(), G)
    want = [len(set(g)) / len(g) for g in groups]
    res = caller.call(fn, samples.clone())
    if samples.dim() == 1 and Result._kind(res.value) in ("int", "float"):
        got = [res.number(f"{fn}'s result")]
    else:
        shape, got = res.tensor(f"{fn}'s result", floating=False)
        if shape != _shape_of(samples)[:-1]:
            raise CheckFailed(
                f"{fn} returned shape {shape} for samples of shape {_shape_of(samples)}",
                f"one value per group, shape {_shape_of(samples)[:-1]}")
    for i, (g, w, x) in enumerate(zip(groups, want, got, strict=True)):
        if math.isclose(x, w, abs_tol=tol):
            continue
        hint = "count the distinct values of the group and divide by G"
        if math.isclose(x, w * len(g), abs_tol=tol):
            hint = "that is the number of distinct answers; return the share (divide by G)"
        elif math.isclose(x, 1 - w, abs_tol=tol):
            hint = "that is the share of repeats; return the share of distinct answers"
        raise CheckFailed(f"group {i} = {g}: expected diversity {w:.3f}, got {x:.3f}", hint)


# --------------------------------------------------------------------------- ps3
def _trainer_settings(kwargs: dict) -> tuple[int, int, float, float]:
    return (int(kwargs.get("group_size", 8)), int(kwargs.get("steps", 300)),
            float(kwargs.get("lr", 0.1)), float(kwargs.get("clip_eps", 0.2)))


def _train(caller, arm_probs, seed, env_seed, fn, kwargs):
    """One run of the student's trainer on an opaque bandit: (probs, env)."""
    p = [float(v) for v in arm_probs]
    G, steps, _, _ = _trainer_settings(kwargs)
    env = BanditEnv(p, seed=env_seed, budget=G * steps)
    res = caller.call(fn, env, seed=seed, **kwargs)
    shape, probs = res.tensor(f"{fn}'s result")
    K = len(p)
    if shape != (K,):
        raise CheckFailed(f"{fn} returned shape {shape} for {K} arms",
                          "return the final policy's probabilities, shape (K,) with K = "
                          "env.n_arms")
    if not all(math.isfinite(x) for x in probs) or min(probs) < 0 or \
            not math.isclose(sum(probs), 1.0, abs_tol=1e-4):
        raise CheckFailed(f"{fn} returned {_fmt(probs)}, which is not a probability vector",
                          "return softmax(logits), not the logits")
    return probs, env


def _bandit_trainer(caller, arm_probs, seeds, min_success=None, threshold: float = 0.9,
                    fn: str = "train_bandit_grpo", **kwargs) -> None:
    """``fn(env, seed=s, **kwargs)`` on an opaque bandit (pulls only, budget
    group_size * steps) must return the final policy's arm probabilities (K,) and put >=
    ``threshold`` on the best arm in at least ``min_success`` of the runs (default: all)."""
    p = [float(v) for v in arm_probs]
    best = p.index(max(p))
    need = len(seeds) if min_success is None else min_success
    ok, report = 0, []
    for s in seeds:
        probs, _ = _train(caller, p, s, s, fn, kwargs)
        ok += probs[best] >= threshold
        report.append(f"seed {s}: P(best) = {probs[best]:.3f}")
    if ok < need:
        settings = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default settings"
        raise CheckFailed(
            f"on a bandit with success probabilities {_fmt(p, 12)} ({settings}) the best arm "
            f"(index {best}) got probability >= {threshold} in {ok} of {len(seeds)} runs, "
            f"need {need} ({'; '.join(report)})",
            "the trainer does not find the best arm. Check the sign of the loss (minimise "
            "minus the objective), that advantages come from compute-once group statistics, "
            "that pi_old is fixed while you take the mu updates, and that you use Adam with lr")


def _bandit_seeding(caller, arm_probs, fn: str = "train_bandit_grpo", **kwargs) -> None:
    """Same seed (and the same environment) -> identical result; another seed -> another."""
    a, _ = _train(caller, arm_probs, 3, 0, fn, kwargs)
    b, _ = _train(caller, arm_probs, 3, 0, fn, kwargs)
    c, _ = _train(caller, arm_probs, 4, 0, fn, kwargs)
    if a != b:
        raise CheckFailed("two runs with seed=3 on the same environment gave different "
                          "results: draw every arm from one torch.Generator().manual_seed(seed)")
    if a == c:
        raise CheckFailed("seeds 3 and 4 gave identical results on the same environment: "
                          "sample the arms with the generator seeded by `seed`")


def replay_grpo(n_arms: int, history, group_size: int, lr: float, clip_eps: float,
                mu: int = 2) -> list[float]:
    """The policy GRPO reaches from the pulls it made: ``history`` is the environment's
    list of (arms, rewards); the pulls are cut into groups of ``group_size`` in order, and
    for each group the assignment's algorithm takes ``mu`` Adam steps (pi_old frozen,
    advantages (r - mean) / (unbiased std + 1e-6), 0 for all-equal groups, clipped
    surrogate). Runs on the trusted side only."""
    arms = torch.cat([a for a, _ in history]) if history else torch.zeros(0, dtype=torch.long)
    rewards = torch.cat([r for _, r in history]) if history else torch.zeros(0)
    logits = torch.zeros(n_arms, requires_grad=True)  # (K,)
    opt = torch.optim.Adam([logits], lr=lr)
    for start in range(0, arms.numel() - group_size + 1, group_size):
        a, r = arms[start:start + group_size], rewards[start:start + group_size]  # (G,)
        with torch.no_grad():
            old = torch.log_softmax(logits, -1)[a]  # (G,) pi_old, frozen
            std = r.std()
            adv = torch.zeros_like(r) if bool((r == r[0]).all()) else \
                (r - r.mean()) / (std + 1e-6)  # (G,)
        for _ in range(mu):
            ratio = torch.exp(torch.log_softmax(logits, -1)[a] - old)  # (G,)
            loss = -torch.minimum(ratio * adv,
                                  ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return torch.softmax(logits.detach(), -1).tolist()


def _bandit_grpo_update(caller, arm_probs, seed: int = 0, tol: float = 2e-3,
                        fn: str = "train_bandit_grpo", **kwargs) -> None:
    """The trainer is GRPO: it pulls one group of group_size arms per step, steps times,
    and returns the policy GRPO (mu = 2 clipped Adam updates per group) reaches from those
    pulls, replayed on the trusted side from the environment's record."""
    G, steps, lr, clip_eps = _trainer_settings(kwargs)
    probs, env = _train(caller, arm_probs, seed, seed, fn, kwargs)
    if env.pulls != G * steps:
        raise CheckFailed(f"{fn} made {env.pulls} pulls with group_size={G}, steps={steps}",
                          "GRPO pulls one group of group_size arms per step: group_size * "
                          "steps pulls in all")
    want = replay_grpo(env.n_arms, env.history, G, lr, clip_eps)
    worst = max(abs(x - y) for x, y in zip(probs, want, strict=True))
    if worst > tol:
        raise CheckFailed(
            f"from the pulls it made, GRPO reaches {_fmt(want, 10)}; {fn} returned "
            f"{_fmt(probs, 10)} (largest difference {worst:.4f})",
            "the returned policy is not the one GRPO computes from your pulls: per step, "
            "freeze pi_old, compute the group advantages (unbiased std + 1e-6, 0 for equal "
            "rewards), take 2 Adam steps with lr on the clipped surrogate with ratios "
            "pi(a) / pi_old(a), and return softmax(logits)")


# --------------------------------------------------------------------------- registry
#: Check name -> (comparison taking a caller, the student function it calls by default).
CHECKS = {
    "check_equal": (_equal, None),
    "check_group_advantages": (_group_advantages, "group_advantages"),
    "check_degenerate_groups": (_degenerate_groups, "group_advantages"),
    "check_prob_degenerate": (_prob_degenerate, "prob_degenerate_group"),
    "check_simulation": (_simulation, "simulate_degenerate_share"),
    "check_clipped_surrogate": (_clipped_surrogate, "clipped_surrogate_loss"),
    "check_group_diversity": (_group_diversity, "group_diversity"),
    "check_bandit_trainer": (_bandit_trainer, "train_bandit_grpo"),
    "check_bandit_seeding": (_bandit_seeding, "train_bandit_grpo"),
    "check_bandit_grpo_update": (_bandit_grpo_update, "train_bandit_grpo"),
}


def _local(name: str):
    core, default_fn = CHECKS[name]

    def check(func, *args, **kwargs):
        fn = default_fn or getattr(func, "__name__", "your function")
        return core(LocalCaller({fn: func}), *args, fn=fn, **kwargs)

    check.__name__ = name
    check.__doc__ = (core.__doc__ or "") + (
        "\n\nIn a notebook: pass the function itself; it is called in this kernel.")
    return check


check_equal = _local("check_equal")
check_group_advantages = _local("check_group_advantages")
check_degenerate_groups = _local("check_degenerate_groups")
check_prob_degenerate = _local("check_prob_degenerate")
check_simulation = _local("check_simulation")
check_clipped_surrogate = _local("check_clipped_surrogate")
check_group_diversity = _local("check_group_diversity")
check_bandit_trainer = _local("check_bandit_trainer")
check_bandit_seeding = _local("check_bandit_seeding")
check_bandit_grpo_update = _local("check_bandit_grpo_update")

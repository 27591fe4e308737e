"""Input validation shared by every course_lib function and config.

Every public function of course_lib checks its inputs with these helpers, and every
config its fields, so that bad input fails loudly with a message that says what was wrong
(wrong shape, NaN reward, a group of size 1, an empty mask, an unknown loss type ...)
instead of silently returning a wrong number.

A config field carries its constraint in its type, which is also what the command line
shows: ``beta: NonNegative = 0.0``, ``loss_type: Literal[tuple(GRPO_LOSS_TYPES)]`` (the
allowed values, from the maths module), ``top_k: PositiveInt | None``;
:func:`check_fields` checks them all.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Annotated, Literal

import torch
from torch import Tensor

__all__ = [
    "check_float",
    "check_finite",
    "check_same_shape",
    "check_mask",
    "check_clip_eps",
    "check_nonnegative",
    "check_choice",
    "check_int",
    "check_positive",
    "check_in_range",
    "check_fields",
    "at_least",
    "Count",
    "PositiveInt",
    "Positive",
    "NonNegative",
    "ClipRange",
    "UnitInterval",
]


def check_float(name: str, x: object) -> Tensor:
    """Raise ValueError unless ``x`` is a floating-point torch tensor."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor, got dtype {x.dtype} "
            f"(convert with .float())"
        )
    return x


def check_finite(name: str, x: Tensor) -> Tensor:
    """Raise ValueError if ``x`` holds NaN or inf (says how many and which kind)."""
    bad = ~torch.isfinite(x)
    if bad.any():
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(f"{name} contains {n_nan} NaN and {n_inf} inf value(s)")
    return x


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ValueError unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            f"they must match"
        )


def check_mask(
    mask: Tensor | None, like: Tensor, name: str = "mask", like_name: str = "logprobs"
) -> Tensor:
    """Return ``mask`` as a float 0/1 tensor shaped like ``like`` (all ones if None).

    Raises ValueError if the shape differs or if any entry is not 0 or 1. An all-zero
    mask is allowed here; the callers that need at least one real token say so.
    """
    if mask is None:
        return torch.ones_like(like)
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    check_same_shape(name, mask, like_name, like)
    m = mask.to(like.dtype)
    if not ((m == 0) | (m == 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (or booleans)")
    return m


def check_clip_eps(name: str, eps: float) -> float:
    """Raise ValueError unless 0 < eps < 1 (a clip range around ratio 1)."""
    if not isinstance(eps, (int, float)) or not 0.0 < float(eps) < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {eps!r}")
    return float(eps)


def check_nonnegative(name: str, value: float) -> float:
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    if not isinstance(value, (int, float)) or not (value >= 0.0) or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Raise ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def check_int(name: str, value: object, minimum: int, why: str = "") -> int:
    """Raise ValueError unless ``value`` is an int >= ``minimum`` (``why`` is appended)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        hint = f" ({why})" if why else ""
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}{hint}")
    return value


def check_positive(name: str, value: object) -> float:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not isinstance(value, (int, float)) or not 0.0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_in_range(name: str, value: object, low: float, high: float,
                   low_open: bool = False, high_open: bool = False) -> float:
    """Raise ValueError unless ``low <= value <= high`` (``<`` on a side marked open)."""
    ok = isinstance(value, (int, float)) and (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def at_least(minimum: int, why: str = ""):
    """The constraint of :func:`check_int` as ``check(name, value)``, for a field's type."""
    return functools.partial(check_int, minimum=minimum, why=why)


#: Field types that carry their constraint (``Annotated[type, check(name, value)]``).
Count = Annotated[int, at_least(0)]
PositiveInt = Annotated[int, at_least(1)]
Positive = Annotated[float, check_positive]
NonNegative = Annotated[float, check_nonnegative]
ClipRange = Annotated[float, check_clip_eps]
UnitInterval = Annotated[float, functools.partial(check_in_range, low=0.0, high=1.0)]


def check_fields(config: object) -> None:
    """Raise ValueError unless every field of the dataclass ``config`` meets the
    constraint its type carries: one of the values of a ``Literal[...]``; each check of an
    ``Annotated[type, check, ...]``; either of them may be ``| None`` (None passes). The
    annotations of every class in the MRO count, so overriding a default (``lr: float =
    5e-4``) does not drop the base class's constraint."""
    fields = {f.name for f in dataclasses.fields(config)}
    for cls in type(config).__mro__:  # a subclass that overrides a default keeps the check
        own = cls.__dict__.get("__annotations__", {})
        hints = typing.get_type_hints(cls, include_extras=True) if own else {}
        for name in fields & set(own):
            _check_hint(name, hints[name], getattr(config, name))


def _check_hint(name: str, hint: object, value: object) -> None:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in options:
        return
    for option in options:
        if typing.get_origin(option) is Literal:
            check_choice(name, value, typing.get_args(option))
        elif typing.get_origin(option) is Annotated:
            for check in option.__metadata__:
                check(name, value)

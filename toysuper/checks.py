"""Input validation: every error names the parameter and the value it got."""

from __future__ import annotations

import math

import torch


def positive_int(name: str, value) -> int:
    """`value` as an int >= 1, else a ValueError/TypeError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return value


def non_negative(name: str, value) -> float:
    """`value` as a finite float >= 0."""
    value = finite_float(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def positive_float(name: str, value) -> float:
    """`value` as a finite float > 0 (a learning rate of 0 trains nothing)."""
    value = finite_float(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def finite_float(name: str, value) -> float:
    """`value` as a finite float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def probability_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """Check that every entry of `value` lies in [0, 1]; report the first bad one."""
    bad = ~((value >= 0) & (value <= 1))  # also catches NaN
    if bad.any():
        first = value[bad].flatten()[0].item()
        raise ValueError(f"{name} must lie in [0, 1], got {first!r} (at {bad.nonzero()[0].tolist()})")
    return value


def finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """Check that `value` has no NaN or infinity."""
    if not torch.isfinite(value).all():
        count = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} contains {count} NaN or infinite value(s); shape {tuple(value.shape)}")
    return value


def as_tensor(name: str, value, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """`value` (number, sequence or tensor) as a tensor on `device`."""
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor, got {value!r}") from error

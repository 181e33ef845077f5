"""Statistics of the training inputs that set up a run: input scale and b_dec's start."""

from __future__ import annotations

import math

import torch

SCALINGS = ("mean_norm_sqrt_d", "unit_mean_squared_norm")
B_DEC_INITS = ("zeros", "mean", "geometric_median")


def geometric_median(x: torch.Tensor, iterations: int = 50) -> torch.Tensor:
    """Per instance, the point minimising the summed distance to the inputs: (n, inst, d) -> (inst, d).

    Weiszfeld's algorithm from the mean, a fixed number of iterations (no data-dependent stop: no host sync,
    and the same result whatever the other instances hold)."""
    x = x.double()
    median = x.mean(0)
    for _ in range(iterations):
        weights = 1.0 / (x - median).norm(dim=-1).clamp_min(1e-8)  # (n, inst)
        median = (weights[..., None] * x).sum(0) / weights.sum(0)[:, None]
    return median.float()


def b_dec_start(x: torch.Tensor, how: str) -> torch.Tensor:
    """b_dec's initial value from inputs x (n, inst, d): their mean or geometric median ("zeros" keeps the
    recipe's init and never comes here)."""
    if how not in B_DEC_INITS:
        raise ValueError(f"b_dec_init must be one of {B_DEC_INITS}, got {how!r}")
    return x.mean(0) if how == "mean" else geometric_median(x)


def input_scale(x: torch.Tensor, how: str) -> torch.Tensor:
    """The per-instance factor s that gives inputs s·x the recipe's norm, (n, inst, d) -> (inst,):
    "mean_norm_sqrt_d": E||s x|| = √d (Anthropic, April 2024 update); "unit_mean_squared_norm": E||s x||² = 1
    (Gemma Scope)."""
    if how not in SCALINGS:
        raise ValueError(f"input scaling must be one of {SCALINGS}, got {how!r}")
    norms = x.double().norm(dim=-1)  # (n, inst)
    if how == "mean_norm_sqrt_d":
        scale = math.sqrt(x.shape[-1]) / norms.mean(0)
    else:
        scale = 1.0 / norms.pow(2).mean(0).sqrt()
    return torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0).float()

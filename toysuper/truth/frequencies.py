"""Firing probabilities that follow a power law over feature rank (feature 0 the most frequent).

Features in real models fire with a heavy-tailed frequency distribution: a few fire on most tokens,
most fire rarely (Bricken et al. 2023, "Towards Monosemanticity", feature density histograms).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import finite_float
from .shapes import per_instance


@dataclass(frozen=True)
class Zipf:
    """A power law over feature rank r = i + 1, set one of two ways:

    - `Zipf(exponent, l0)`: p_i = min(1, c · r^(-exponent)) with c such that Σ_i p_i = l0 (rates the
      scaling would push above 1 are held at 1 and the rest rescaled: water-filling). l0 in
      (0, n_features], a number or one per instance `(n_instances,)`; 30 by default.
    - `Zipf(exponent, p_max=, p_min=)`: r^(-exponent) mapped linearly onto [p_min, p_max], 0 < p_min <
      p_max <= 1, exponent > 0 (Chanin & Garriga-Alonso 2026, SynthSAEBench; SAELens's
      `zipfian_firing_probabilities`).
    """

    exponent: float = 1.0
    l0: float | tuple | None = None
    p_max: float | None = None
    p_min: float | None = None

    def __post_init__(self):
        exponent = finite_float("exponent", self.exponent)
        if exponent < 0:
            raise ValueError(f"exponent must be >= 0, got {self.exponent!r}")
        if self.p_max is None and self.p_min is None:
            return
        if self.l0 is not None:
            raise ValueError(f"give l0 or (p_max, p_min), not both: l0={self.l0!r}, p_max={self.p_max!r}, "
                             f"p_min={self.p_min!r}")
        if self.p_max is None or self.p_min is None:
            raise ValueError(f"p_max and p_min go together, got p_max={self.p_max!r}, p_min={self.p_min!r}")
        p_max, p_min = finite_float("p_max", self.p_max), finite_float("p_min", self.p_min)
        if not 0 < p_min < p_max <= 1:
            raise ValueError(f"need 0 < p_min < p_max <= 1, got p_min={self.p_min!r}, p_max={self.p_max!r}")
        if exponent == 0:
            raise ValueError(f"exponent must be > 0 with p_max and p_min, got {self.exponent!r}")

    def resolve(self, n_instances: int, n_features: int, device) -> torch.Tensor:
        """The firing probabilities, (inst, n_features), float32 on `device`."""
        weights = torch.arange(1, n_features + 1, dtype=torch.float64).pow(-float(self.exponent))
        if self.p_max is not None:
            if n_features == 1:
                return torch.full((n_instances, 1), float(self.p_max), device=device)
            spread = (weights - weights[-1]) / (weights[0] - weights[-1])
            return (self.p_min + (self.p_max - self.p_min) * spread).float().expand(n_instances, -1).to(device)
        l0 = per_instance("l0", 30.0 if self.l0 is None else self.l0, n_instances, torch.device("cpu")).double()
        if not torch.isfinite(l0).all() or (l0 <= 0).any() or (l0 > n_features).any():
            raise ValueError(f"l0 must lie in (0, n_features={n_features}], got {self.l0!r}")
        return _water_fill(weights.expand(n_instances, -1), l0).float().to(device)


def _water_fill(weights: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """p = min(1, c w) per row with Σ p = total; `weights` sorted descending, (inst, n)."""
    saturated = torch.zeros(weights.shape[0], 1, dtype=torch.long)  # leading entries held at 1
    for _ in range(weights.shape[1] + 1):  # each pass saturates at least one more or stops
        free = torch.arange(weights.shape[1]) >= saturated
        scale = (total - saturated) / (weights * free).sum(-1, keepdim=True).clamp_min(1e-300)
        p = torch.where(free, scale * weights, torch.ones_like(weights))
        now = (p >= 1).sum(-1, keepdim=True)
        if torch.equal(now, saturated):
            break
        saturated = now
    return p.clamp(0, 1)

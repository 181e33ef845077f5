"""Firing probabilities that follow a power law, with the mean number of active features as the knob.

Features in real models fire with a heavy-tailed frequency distribution: a few fire on
most tokens, most fire rarely (Bricken et al. 2023, "Towards Monosemanticity", feature
density histograms). `Zipf` plants that: the feature of rank r (r = 1 for feature 0)
fires with probability proportional to r^(-exponent), scaled so the expected number of
active features per sample is `l0`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import finite_float
from .shapes import per_instance


@dataclass(frozen=True)
class Zipf:
    """p_i = min(1, c · (i + 1)^(-exponent)), with c chosen so that Σ_i p_i = l0.

    Args:
        exponent: the power-law exponent α >= 0 (0 gives every feature the rate l0 / n).
        l0: the mean number of active features per sample, in (0, n_features]; a number,
            or one per instance `(n_instances,)` to sweep L0 across instances.

    Feature 0 is the most frequent. Rates that the scaling would push above 1 are held at
    1 and the rest rescaled (water-filling), so Σ p_i = l0 holds exactly.
    """

    exponent: float = 1.0
    l0: float | tuple = 30.0

    def __post_init__(self):
        exponent = finite_float("exponent", self.exponent)
        if exponent < 0:
            raise ValueError(f"exponent must be >= 0, got {self.exponent!r}")

    def resolve(self, n_instances: int, n_features: int, device) -> torch.Tensor:
        """The firing probabilities, (inst, n_features), float32 on `device`."""
        l0 = per_instance("l0", self.l0, n_instances, torch.device("cpu")).double()
        if not torch.isfinite(l0).all() or (l0 <= 0).any() or (l0 > n_features).any():
            raise ValueError(f"l0 must lie in (0, n_features={n_features}], got {self.l0!r}")
        weights = torch.arange(1, n_features + 1, dtype=torch.float64).pow(-float(self.exponent))
        return _water_fill(weights.expand(n_instances, -1), l0).float().to(device)


def _water_fill(weights: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """p = min(1, c w) per row with Σ p = total; `weights` sorted descending, (inst, n)."""
    p = torch.zeros_like(weights)
    saturated = torch.zeros(weights.shape[0], 1, dtype=torch.long)  # leading entries held at 1
    for _ in range(weights.shape[1] + 1):  # each pass saturates at least one more or stops
        rank = torch.arange(weights.shape[1]).expand_as(weights)
        free = rank >= saturated
        scale = (total - saturated) / (weights * free).sum(-1, keepdim=True).clamp_min(1e-300)
        p = torch.where(free, scale * weights, torch.ones_like(weights))
        now = (p >= 1).sum(-1, keepdim=True)
        if torch.equal(now, saturated):
            break
        saturated = now
    return p.clamp(0, 1)


FIRING_PROBS = {"zipf": Zipf}
"""Named firing-probability laws, for configs: {"zipf": Zipf}."""

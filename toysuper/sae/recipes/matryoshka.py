"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary, each trained to reconstruct on its own.

Bussmann, Nabeshima, Karvonen & Nanda 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders": with the latents ordered, the prefixes [0, w_1) ⊂ [0, w_2) ⊂ … ⊂ [0, w_L = d_sae) each
decode the batch's code restricted to them, and the loss adds their reconstruction errors,
    loss = ||x - x̂||² + Σ_{j<L} β^(L-j) ||x - (W_dec z_{<w_j} + b_dec)||² + α AuxK,
so early latents must carry general features by themselves. The code is BatchTopK's (this class
extends it). The widths grow geometrically, w_j = d_sae · smallest_prefix · prefix_growth^j while below
d_sae; the defaults (1/32, 4) give SynthSAEBench's [128, 512, 2048, 4096] at width 4096.

β = `prefix_balance` = 1 is the published loss; the default 0.25 weighs the inner prefixes down, as
Chanin, Dulka & Garriga-Alonso 2025 ("Feature Hedging: Correlated Features Break Narrow Sparse
Autoencoders") do against hedging, so that the outer latents learn features rather than blends
(docs/tuning.md).
"""

from __future__ import annotations

import torch

from .batchtopk import BatchTopK
from .parts import squared_error


def prefix_widths(d_sae: int, smallest: float, growth: float) -> list[int]:
    """The nested widths, ascending, ending at d_sae: d_sae · smallest · growth^j while below d_sae."""
    widths, width = [], d_sae * smallest
    while round(width) < d_sae:  # growth > 1: `check` ran first
        if round(width) >= 1 and (not widths or round(width) > widths[-1]):
            widths.append(round(width))
        width *= growth
    return widths + [d_sae]


class MatryoshkaBatchTopK(BatchTopK):
    name = "matryoshka"
    hyperparameters = {**BatchTopK.hyperparameters, "smallest_prefix": 1 / 32, "prefix_growth": 4.0,
                       "prefix_balance": 0.25}
    positive_hyperparameters = BatchTopK.positive_hyperparameters | {"smallest_prefix", "prefix_growth"}
    citation = "Bussmann, Nabeshima, Karvonen & Nanda 2025, Learning Multi-Level Features with Matryoshka SAEs"

    def check(self, sae):
        super().check(sae)
        if sae.hyperparameter_max("smallest_prefix") > 1:
            raise ValueError(f"smallest_prefix must be a fraction of d_sae in (0, 1], "
                             f"got {sae.smallest_prefix.tolist()}")
        if sae.hyperparameter_min("prefix_growth") <= 1:
            raise ValueError(f"prefix_growth must be > 1, got {sae.prefix_growth.tolist()}")

    def register(self, sae):
        """Adds the (inst, levels) prefix widths, ascending, each instance's padded in front with d_sae."""
        super().register(sae)
        widths = [prefix_widths(sae.d_sae, s, g) for s, g in zip(sae.smallest_prefix.tolist(),
                                                                   sae.prefix_growth.tolist())]
        levels = max(len(w) for w in widths)
        padded = [[sae.d_sae] * (levels - len(w)) + w for w in widths]
        sae.register_buffer("prefix_widths", torch.tensor(padded, device=sae.W_dec.device), persistent=False)

    def inner_losses(self, sae, x, code):
        latent = torch.arange(sae.d_sae, device=x.device)
        inner = torch.zeros(sae.n_instances, device=x.device)
        inner_levels = sae.prefix_widths.shape[1] - 1
        for level in range(inner_levels):
            width = sae.prefix_widths[:, level]
            level_mse = squared_error(x, code.only((latent < width[:, None]).float()).decode(sae))
            weight = sae.prefix_balance ** (inner_levels - level)  # β for the widest inner prefix, β² inside it, ...
            inner = inner + torch.where(width < sae.d_sae, weight * level_mse, 0.0)
        return {"prefix_mse": inner}

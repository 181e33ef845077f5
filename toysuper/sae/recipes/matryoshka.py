"""Matryoshka BatchTopK SAE: nested prefixes of the dictionary, each trained to reconstruct on its own.

Bussmann, Nabeshima, Karvonen & Nanda 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders": with the latents ordered, the prefixes [0, w_1) ⊂ [0, w_2) ⊂ … ⊂ [0, w_L = d_sae) each
decode the batch's code restricted to them, and the loss adds their reconstruction errors,
    loss = ||x - x̂||² + Σ_{j<L} β^(L-j) ||x - (W_dec z_{<w_j} + b_dec)||² + α AuxK,
so early latents must carry general features by themselves and cannot be absorbed into later, more
specific ones. The code is BatchTopK's over the whole width (this class extends it: TopK warm-up,
threshold at inference, unit-norm decoder, AuxK as in Gao et al. 2024). The prefix widths grow geometrically:
w_j = d_sae · smallest_prefix · prefix_growth^j while below d_sae, then d_sae itself; the defaults
(1/32, 4) give SynthSAEBench's [128, 512, 2048, 4096] at width 4096 (Chanin & Garriga-Alonso 2026).

β (`prefix_balance`) weighs the inner prefixes: β for the widest, β² for the next, and so on inward.
β = 1 is the published loss (Bussmann et al.; SAELens; SynthSAEBench). Chanin, Dulka & Garriga-Alonso
2025 ("Feature Hedging: Correlated Features Break Narrow Sparse Autoencoders") show why it needs one:
a prefix narrower than the features it sees mixes them into its latents to cut its own error (hedging),
and they scale the inner levels' losses by powers of a multiplier to balance that against absorption.
The default β = 0.25 keeps the nesting while letting the latents outside the inner prefixes learn
features rather than blends on flat feature sets (measurements: docs/tuning.md).
"""

from __future__ import annotations

import torch

from .. import codes
from .base import LossOutput
from .batchtopk import BatchTopK
from .parts import squared_error
from .topk import auxk_loss


def prefix_widths(d_sae: int, smallest: float, growth: float) -> list[int]:
    """The nested widths, ascending, ending at d_sae: d_sae · smallest · growth^j while below d_sae."""
    widths, width = [], d_sae * smallest
    while round(width) < d_sae and growth > 1:
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
        super().register(sae)
        sae.register_buffer("prefix_widths", self.widths(sae), persistent=False)  # derived from the hyperparameters

    def widths(self, sae) -> torch.Tensor:
        """(inst, levels) prefix widths, ascending, each instance's padded in front with d_sae (no level)."""
        per_instance = [prefix_widths(sae.d_sae, s, g) for s, g in zip(sae.smallest_prefix.tolist(),
                                                                         sae.prefix_growth.tolist())]
        levels = max(len(w) for w in per_instance)
        padded = [[sae.d_sae] * (levels - len(w)) + w for w in per_instance]
        return torch.tensor(padded, device=sae.W_dec.device)

    def loss(self, sae, x, state=None):
        pre = sae.centred_pre_activations(x)
        chosen = self.select(sae, pre.detach(), state)
        code = codes.encode(sae, x, pre, *chosen)
        x_hat = code.decode(sae)
        mse = squared_error(x, x_hat)  # the outermost prefix: the whole dictionary
        widths = sae.prefix_widths  # (inst, levels), set with the hyperparameters
        latent = torch.arange(sae.d_sae, device=x.device)
        inner = torch.zeros_like(mse)
        inner_levels = widths.shape[1] - 1
        for level in range(inner_levels):
            width = widths[:, level]
            level_mse = squared_error(x, code.only((latent < width[:, None]).float()).decode(sae))
            weight = sae.prefix_balance ** (inner_levels - level)  # β for the widest inner prefix, β² inside it, ...
            inner = inner + torch.where(width < sae.d_sae, weight * level_mse, 0.0)
        aux = auxk_loss(sae, x, pre, x - x_hat, state)
        terms = {"mse": mse, "prefix_mse": inner, "auxk": aux, **self.code_statistics(sae, pre.detach(), *chosen)}
        return LossOutput(mse + inner + sae.aux_coefficient * aux, terms, code.fired(), code.l0())

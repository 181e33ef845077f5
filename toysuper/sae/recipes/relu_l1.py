"""The Towards Monosemanticity SAE: centred input, unit-norm decoder, plain L1, resampling.

Bricken et al. 2023, "Towards Monosemanticity: Decomposing Language Models With Dictionary
Learning" (Anthropic):
    x̄ = x - b_dec,   f = ReLU(W_enc x̄ + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ ||f||₁,   ||W_dec[i]||₂ = 1 for every latent i.
b_dec starts at the geometric median; dead latents are resampled four times early in training from
inputs drawn in proportion to their squared loss (sae/resampling.py). Unlike the paper's independent
He-uniform start, the encoder starts as the decoder's transpose at row norm 0.1 (Anthropic's April 2024
update; docs/tuning.md). With `target_l0` set, λ is scaled by the controller of recipes/target_l0.py.
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from .parts import UnitNormDecoder, activity, squared_error, tied_init
from .target_l0 import HYPERPARAMETERS as TARGET_L0, TargetL0


class ReluL1(Recipe):
    name = "relu_l1"
    hyperparameters = {"l1_coefficient": 0.25, **TARGET_L0}
    citation = "Bricken et al. 2023, Towards Monosemanticity"
    sparsity_knob = "l1_coefficient"
    saelens_export = "standard"
    constraints, controllers = (UnitNormDecoder(),), (TargetL0(),)
    train_defaults = {"lr": 3e-3, "b_dec_init": "geometric_median", "resample": True, "grad_clip": None}

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0, encoder_norm=0.1)

    def encode(self, sae, x):
        return torch.relu(sae.centred_pre_activations(x))

    def loss(self, sae, x, state=None):
        acts = self.encode(sae, x)
        mse = squared_error(x, sae.decode(acts))
        sparsity = acts.sum(-1).mean(0)
        loss = mse + sae.l1_coefficient * sae.sparsity_multiplier * sparsity
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity}, **activity(acts))

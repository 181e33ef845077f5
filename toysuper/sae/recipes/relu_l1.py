"""The Towards Monosemanticity SAE: centred input, unit-norm decoder, plain L1, resampling.

Bricken et al. 2023, "Towards Monosemanticity: Decomposing Language Models With Dictionary
Learning" (Anthropic):
    x̄ = x - b_dec,   f = ReLU(W_enc x̄ + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ ||f||₁,   ||W_dec[i]||₂ = 1 for every latent i.
The decoder constraint is kept by removing each row's gradient component along the row before
the Adam step and renormalising after it. b_dec starts at the geometric median of the data.
Dead latents are resampled four times early in training (toysuper/sae/resampling.py): each is
re-initialised from an input drawn with probability proportional to the SAE's squared loss on it.

One deliberate change: the paper drew W_enc and W_dec independently (He-uniform), a start that is
far from converged after the few million samples of a toy task; here the encoder starts as the
decoder's transpose scaled to rows of norm 0.1 (the small tied start of Anthropic's April 2024 update).
With `target_l0` set, λ is scaled by a controller that reaches that L0 (recipes/target_l0.py).
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from . import target_l0
from .parts import UnitNormDecoder, activity, squared_error, tied_init
from .target_l0 import TargetL0

INIT_ENCODER_NORM = 0.1


class ReluL1(Recipe):
    name = "relu_l1"
    hyperparameters = {"l1_coefficient": 0.25, **target_l0.HYPERPARAMETERS}
    citation = "Bricken et al. 2023, Towards Monosemanticity"
    sparsity_knob = "l1_coefficient"
    saelens_export = "standard"
    constraints, controllers = (UnitNormDecoder(),), (TargetL0(),)
    train_defaults = {"lr": 3e-3, "b_dec_init": "geometric_median", "resample": True, "grad_clip": None}

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0, encoder_norm=INIT_ENCODER_NORM)

    def encode(self, sae, x):
        return torch.relu(sae.centred_pre_activations(x))

    def loss(self, sae, x, state=None):
        acts = self.encode(sae, x)
        mse = squared_error(x, sae.decode(acts))
        sparsity = acts.sum(-1).mean(0)
        loss = mse + sae.l1_coefficient * sae.sparsity_multiplier * sparsity
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity}, **activity(acts))

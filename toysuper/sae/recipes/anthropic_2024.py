"""The hand-worked SAE: ReLU encoder, unconstrained decoder, decoder-norm-weighted L1.

Templeton et al. 2024, "Scaling Monosemanticity", and Anthropic's April 2024 update
("Training Sparse Autoencoders"), Conerly et al.:
    f = ReLU(W_enc x + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i f_i ||W_dec[i]||₂
The norm weighting stops the SAE from shrinking f while growing the decoder, so the
decoder needs no constraint and no resampling. Inputs are scaled by one number per instance
so that E||x||₂ = √d_hidden (the trainer folds the scale back into the weights when training
ends); λ is warmed up linearly from 0 over the first 5% of training (`l1_warmup`, a fraction per
instance; SynthSAEBench's "Standard L1" warms up over the first third); the learning rate decays
linearly to 0 over the last 20%; gradients are clipped to norm 1. Decoder rows start as random
directions of norm 0.1 and the encoder starts tied to the decoder (W_enc = W_decᵀ), biases 0.
With `target_l0` set, λ is scaled by a controller that reaches that L0 (recipes/target_l0.py).
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from . import target_l0
from .parts import activity, check_fraction, squared_error, tied_init, warmup
from .target_l0 import TargetL0

L1_WARMUP_FRACTION = 0.05
INIT_DECODER_NORM = 0.1


class Anthropic2024(Recipe):
    name = "anthropic_2024"
    hyperparameters = {"l1_coefficient": 1.0, "l1_warmup": L1_WARMUP_FRACTION, **target_l0.HYPERPARAMETERS}
    citation = "Templeton et al. 2024, Scaling Monosemanticity; Conerly et al., Anthropic April 2024 update"
    controllers = (TargetL0(),)
    input_scaling = "mean_norm_sqrt_d"
    sparsity_knob = "l1_coefficient"
    saelens_export = "standard"
    centres_input = False
    train_defaults = {"lr": 3e-3, "grad_clip": 1.0, "b_dec_init": "zeros"}

    def check(self, sae):
        check_fraction(sae, "l1_warmup")

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, INIT_DECODER_NORM)

    def encode(self, sae, x):
        return torch.relu(sae.pre_activations(x))

    def loss(self, sae, x, state=None):
        acts = self.encode(sae, x)
        x_hat = sae.decode(acts)
        mse = squared_error(x, x_hat)
        sparsity = (acts * sae.W_dec.norm(dim=-1)).sum(-1).mean(0)  # decoder norms: (inst, d_sae)
        coefficient = sae.l1_coefficient * sae.sparsity_multiplier
        loss = mse + warmup(state, sae.l1_warmup) * coefficient * sparsity
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity}, **activity(acts))

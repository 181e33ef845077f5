"""The hand-worked SAE: ReLU encoder, unconstrained decoder, decoder-norm-weighted L1.

Templeton et al. 2024, "Scaling Monosemanticity", and Anthropic's April 2024 update
("Training Sparse Autoencoders"), Conerly et al.:
    f = ReLU(W_enc x + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i f_i ||W_dec[i]||₂
The norm weighting stops the SAE from shrinking f while growing the decoder, so the decoder needs no
constraint and no resampling. Inputs are scaled so that E||x||₂ = √d_hidden; λ warms up linearly from 0
over the first `l1_warmup` of training (5%); the learning rate decays linearly to 0 over the last 20%;
gradients are clipped to norm 1. Decoder rows start in random directions at norm 0.1, the encoder tied
to them (W_enc = W_decᵀ), biases 0. With `target_l0` set, λ is scaled by the controller of
recipes/target_l0.py.
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from .parts import activity, check_fraction, squared_error, tied_init, warmup
from .target_l0 import HYPERPARAMETERS as TARGET_L0, TargetL0


class Anthropic2024(Recipe):
    name = "anthropic_2024"
    hyperparameters = {"l1_coefficient": 1.0, "l1_warmup": 0.05, **TARGET_L0}
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
        tied_init(sae, generators, 0.1)

    def encode(self, sae, x):
        return torch.relu(sae.pre_activations(x))

    def loss(self, sae, x, state=None):
        acts = self.encode(sae, x)
        mse = squared_error(x, sae.decode(acts))
        sparsity = (acts * sae.W_dec.norm(dim=-1)).sum(-1).mean(0)  # decoder norms: (inst, d_sae)
        coefficient = sae.l1_coefficient * sae.sparsity_multiplier
        loss = mse + warmup(state, sae.l1_warmup) * coefficient * sparsity
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity}, **activity(acts))

"""Gated SAE: a gate path decides which latents fire, a magnitude path how strongly.

Rajamanoharan et al. 2024, "Improving Dictionary Learning with Gated Sparse Autoencoders"
(Google DeepMind). With x̃ = x - b_dec and the two paths sharing directions (W_enc is W_gate,
b_enc is b_gate):
    π_gate = W_gate x̃ + b_gate,   π_mag = exp(r_mag) ⊙ (W_gate x̃) + b_mag,
    f = 1[π_gate > 0] ⊙ ReLU(π_mag),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ ||ReLU(π_gate)||₁ + ||x - x̂_frozen(ReLU(π_gate))||²,
where x̂_frozen decodes with detached W_dec and b_dec: the auxiliary term is the gate path's only source
of reconstruction gradient (1[·] passes none), and freezing the decoder keeps it from bending the
dictionary. As in the paper: unit-norm decoder rows, dead latents resampled (r_mag and b_mag of a
resampled latent back to 0), r_mag, b_mag, b_gate start at 0, b_dec at the geometric median, Adam with
β1 = 0. W_gate starts as W_decᵀ at row norm 0.1, and λ = 0.8 (docs/tuning.md). With `target_l0` set,
λ is scaled by the controller of recipes/target_l0.py.
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from .parts import UnitNormDecoder, activity, squared_error, tied_init
from .target_l0 import HYPERPARAMETERS as TARGET_L0, TargetL0


class Gated(Recipe):
    name = "gated"
    hyperparameters = {"l1_coefficient": 0.8, **TARGET_L0}
    citation = "Rajamanoharan et al. 2024, Improving Dictionary Learning with Gated Sparse Autoencoders"
    sparsity_knob = "l1_coefficient"
    saelens_export = "gated"
    constraints, controllers = (UnitNormDecoder(),), (TargetL0(),)
    train_defaults = {"lr": 3e-3, "betas": (0.0, 0.999), "b_dec_init": "geometric_median", "grad_clip": None,
                      "resample": True}

    def register(self, sae):
        super().register(sae)
        sae.r_mag = torch.nn.Parameter(torch.zeros(sae.n_instances, sae.d_sae, device=sae.W_dec.device))
        sae.b_mag = torch.nn.Parameter(torch.zeros(sae.n_instances, sae.d_sae, device=sae.W_dec.device))

    def init_parameters(self, sae, generators):  # r_mag and b_mag start at 0, as `register` made them
        tied_init(sae, generators, 1.0, encoder_norm=0.1)

    def reset_latents(self, sae, mask):
        sae.r_mag.masked_fill_(mask, 0.0)
        sae.b_mag.masked_fill_(mask, 0.0)

    def per_latent_parameters(self, sae):
        return {"r_mag": sae.r_mag, "b_mag": sae.b_mag}

    def paths(self, sae, x):
        """(π_gate, π_mag), each (batch, inst, d_sae)."""
        projection = sae.centred_projection(x)
        return projection + sae.b_enc, torch.addcmul(sae.b_mag, sae.r_mag.exp(), projection)

    def encode(self, sae, x):
        gate, magnitude = self.paths(sae, x)
        return (gate > 0) * torch.relu(magnitude)

    def loss(self, sae, x, state=None):
        gate, magnitude = self.paths(sae, x)
        gate_acts = torch.relu(gate)
        acts = (gate_acts.detach() > 0) * torch.relu(magnitude)  # 1[π_gate > 0] passes no gradient
        mse = squared_error(x, sae.decode(acts))
        sparsity = gate_acts.sum(-1).mean(0)
        frozen = torch.einsum("bis,isd->bid", gate_acts, sae.W_dec.detach()) + sae.b_dec.detach()
        aux = squared_error(x, frozen)
        loss = mse + sae.l1_coefficient * sae.sparsity_multiplier * sparsity + aux
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity, "aux": aux}, **activity(acts))

"""TopK SAE with the AuxK loss.

Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (OpenAI):
    z = ReLU(TopK_k(W_enc (x - b_pre) + b_enc)),   x̂ = W_dec z + b_pre,
    loss = ||x - x̂||² + α ||e - ê||²,
where e = x - x̂ and ê = W_dec z_aux, z_aux the k_aux largest pre-activations among the dead
latents (no firing in the last `dead_window` samples), α = 1/32. The paper sets k_aux =
d_model / 2; here k_aux is a fixed 64 by default (d_model / 2 on the standard 128-dimensional
task, whatever d_hidden is), capped at d_sae (AuxK can use at most every latent). Here b_pre is b_dec. The decoder rows are held at
unit norm (gradient projection + renormalisation), the encoder starts as the decoder's
transpose, and b_pre starts at the geometric median of the data. Sparsity is set by k, so
there is no sparsity penalty. The paper's formula has no b_enc; their released code has one,
and so does this recipe.

Training holds the code sparsely (toysuper/sae/sparse_codes.py): the encoder's forward pass is
dense, everything after the selection costs in proportion to the k kept latents.
"""

from __future__ import annotations

import torch

from ..sparse_codes import SparseCode, decode_code, is_sparse, top_k_code
from .base import Recipe
from .auxk import auxk_loss
from .parts import UnitNormDecoder, keep_top_k, squared_error, tied_init


class TopK(UnitNormDecoder, Recipe):
    name = "topk"
    hyperparameters = {"k": 8.0, "k_aux": 64.0, "aux_coefficient": 1 / 32}
    integer_hyperparameters = frozenset({"k", "k_aux"})
    positive_hyperparameters = frozenset({"k"})
    citation = "Gao et al. 2024, Scaling and evaluating sparse autoencoders"
    train_defaults = {"lr": 3e-3, "b_dec_init": "geometric_median", "grad_clip": None}

    def default(self, name, d_sae):
        return min(self.hyperparameters[name], d_sae) if name == "k_aux" else self.hyperparameters[name]

    def check(self, sae):
        for name in ("k", "k_aux"):
            if sae.hyperparameter_max(name) > sae.d_sae:
                raise ValueError(f"{name} must be at most d_sae={sae.d_sae}, got {getattr(sae, name).tolist()}")

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0)

    def encode(self, sae, x):
        return torch.relu(keep_top_k(sae.centred_pre_activations(x), sae.k.long(), int(sae.hyperparameter_max("k"))))

    def training_code(self, sae, x: torch.Tensor, pre: torch.Tensor) -> SparseCode:
        """The latents this recipe keeps in training, re-scored with autograd."""
        return top_k_code(sae, x, pre, sae.k.long(), self.per_row(sae))

    def loss(self, sae, x, state=None):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not is_sparse(self.per_row(sae), sae.d_sae)):
            pre = sae.centred_pre_activations(x)  # chooses the latents; gradients flow through it only on dense codes
        code = self.training_code(sae, x, pre)
        x_hat = decode_code(sae, code)
        mse = squared_error(x, x_hat)
        dead = state.dead() if state is not None else None
        aux = auxk_loss(sae, x, pre, x - x_hat, dead, sae.k_aux.long(), int(sae.hyperparameter_max("k_aux")))
        return {"loss": mse + sae.aux_coefficient * aux, "mse": mse, "auxk": aux, "l0": code.l0(),
                "fired": code.fired(), **self.code_statistics(sae, code)}

    def per_row(self, sae) -> int:
        """The most latents the training code keeps per row (all instances)."""
        return int(sae.hyperparameter_max("k"))

    def code_statistics(self, sae, code: SparseCode) -> dict[str, torch.Tensor]:
        """Further (inst,) terms a subclass reads off the training code."""
        return {}

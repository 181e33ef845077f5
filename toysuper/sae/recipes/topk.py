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

Training computes the code sparsely (sae/sparse.py): the encoder's forward pass is a dense matmul
that only chooses the latents (sae/selection.py); everything after the choice costs in proportion
to the kept latents.
"""

from __future__ import annotations

import torch

from .. import selection
from ..sparse import SparseCode, code_at, decode_code
from .auxk import auxk_loss
from .base import Recipe
from .parts import UnitNormDecoder, keep_top_k, squared_error, tied_init


class TopK(UnitNormDecoder, Recipe):
    name = "topk"
    hyperparameters = {"k": 8.0, "k_aux": 64.0, "aux_coefficient": 1 / 32}
    integer_hyperparameters = frozenset({"k", "k_aux"})
    positive_hyperparameters = frozenset({"k"})
    sparsity_knob = "k"
    saelens_export = "topk"
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

    def select(self, sae, pre: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The entries this recipe keeps: (rows, latents, keep), see sae/selection.py."""
        return selection.top_k(pre, sae.k.long(), int(sae.hyperparameter_max("k")))

    def training_code(self, sae, x: torch.Tensor, state=None) -> tuple[SparseCode, torch.Tensor]:
        """The code training uses for inputs x (batch, inst, d_hidden), and the pre-activations that chose it."""
        with torch.no_grad():
            pre = sae.centred_pre_activations(x)  # chooses the latents; the kept ones are scored afresh
        return code_at(sae, x, *self.select(sae, pre, state)), pre

    def loss(self, sae, x, state=None):
        code, pre = self.training_code(sae, x, state)
        x_hat = decode_code(sae, code)
        mse = squared_error(x, x_hat)
        aux = auxk_loss(sae, x, pre, x - x_hat, state, sae.k_aux.long(), int(sae.hyperparameter_max("k_aux")))
        return {"loss": mse + sae.aux_coefficient * aux, "mse": mse, "auxk": aux, "l0": code.l0(),
                "fired": code.fired(), **self.code_statistics(sae, code)}

    def code_statistics(self, sae, code: SparseCode) -> dict[str, torch.Tensor]:
        """Further (inst,) terms a subclass reads off the training code."""
        return {}

"""TopK SAE with the AuxK loss.

Gao et al. 2024, "Scaling and evaluating sparse autoencoders" (OpenAI):
    π = W_enc (x - b_pre) + b_enc,   z = ReLU(TopK_k(π)),   x̂ = W_dec z + b_pre,
    loss = ||x - x̂||² + α ||e - ê||²,   α = 1/32,
where TopK_k keeps each sample's k largest pre-activations (top-k, then scatter into zeros), and AuxK's
ê = W_dec ReLU(TopK_{k_aux}(π masked to the dead latents)) reconstructs the residual e = x - x̂ (detached,
no decoder bias) from the latents dead for `dead_window` samples, giving them a gradient to come back by.
b_pre is b_dec, started at the geometric median; the decoder rows are held at unit norm, the encoder
starts as their transpose. The paper has no b_enc (their code has one) and k_aux = d_model / 2; here
k_aux is 64 (d_model / 2 on the standard task), capped at d_sae. sae/codes.py picks the code's
implementation for the device.
"""

from __future__ import annotations

import torch

from .. import codes
from ..state import TrainState
from .base import LossOutput, Recipe
from .parts import UnitNormDecoder, squared_error, tied_init


def auxk_loss(sae, x: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor, state: TrainState | None
              ) -> torch.Tensor:
    """AuxK's ||e - ê||² per instance, (inst,); 0 for an instance with nothing dead, and outside training.

    x: the SAE's input, (batch, inst, d_hidden); pre: π with autograd, (batch, inst, d_sae); residual: x - x̂.
    """
    dead = state.dead() if state is not None else None
    if dead is None:
        return x.new_zeros(sae.n_instances)
    e_hat = codes.top_k_among(sae, x, pre, dead, sae.k_aux.long(), int(sae.hyperparameter_max("k_aux")))
    loss = (residual.detach().float() - e_hat.float()).pow(2).sum(-1).mean(0)
    return torch.where(dead.any(-1), loss, 0.0)


class TopK(Recipe):
    name = "topk"
    hyperparameters = {"k": 8.0, "k_aux": 64.0, "aux_coefficient": 1 / 32}
    integer_hyperparameters = frozenset({"k", "k_aux"})
    positive_hyperparameters = frozenset({"k"})
    sparsity_knob = "k"
    saelens_export = "topk"
    citation = "Gao et al. 2024, Scaling and evaluating sparse autoencoders"
    train_defaults = {"lr": 3e-3, "b_dec_init": "geometric_median", "grad_clip": None}
    constraints = (UnitNormDecoder(),)

    def default(self, name, d_sae):
        return min(self.hyperparameters[name], d_sae) if name == "k_aux" else self.hyperparameters[name]

    def check(self, sae):
        for name in ("k", "k_aux"):
            if sae.hyperparameter_max(name) > sae.d_sae:
                raise ValueError(f"{name} must be at most d_sae={sae.d_sae}, got {getattr(sae, name).tolist()}")

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0)

    def encode(self, sae, x):
        pre = sae.centred_pre_activations(x)
        return codes.scatter(pre, *self.select(sae, pre.detach(), None))

    def select(self, sae, pre: torch.Tensor, state) -> tuple[torch.Tensor, torch.Tensor]:
        """The code's entries (positions, keep), chosen from pre-activations without autograd."""
        return codes.top_k(pre, sae.k.long(), int(sae.hyperparameter_max("k")))

    def loss(self, sae, x, state=None):
        pre = sae.centred_pre_activations(x)
        chosen = self.select(sae, pre.detach(), state)
        code = codes.encode(sae, x, pre, *chosen)
        x_hat = code.decode(sae)
        mse = squared_error(x, x_hat)
        inner = self.inner_losses(sae, x, code)
        aux = auxk_loss(sae, x, pre, x - x_hat, state)
        terms = {"mse": mse, **inner, "auxk": aux, **self.code_statistics(sae, pre.detach(), *chosen)}
        return LossOutput(mse + sum(inner.values()) + sae.aux_coefficient * aux, terms, code.fired(), code.l0())

    def inner_losses(self, sae, x: torch.Tensor, code) -> dict[str, torch.Tensor]:
        """Further (inst,) reconstruction terms a subclass adds to the loss."""
        return {}

    def code_statistics(self, sae, pre: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
        """Further (inst,) terms a subclass reads off the chosen entries."""
        return {}

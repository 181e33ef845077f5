"""AuxK, the auxiliary loss that revives dead latents (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders", eq. 4):

    L_aux = ||e - ê||²,   e = x - x̂ (detached),   ê = W_dec z_aux (no decoder bias),

where z_aux keeps each row's k_aux largest positive pre-activations among the dead latents (no firing
in the last `dead_window` samples). An instance with no dead latent has no auxiliary loss. z_aux is a
sparse code (sae/sparse.py) whose entries sae/selection.aux_k chooses.
"""

from __future__ import annotations

import torch

from .. import selection
from ..sparse import code_at, decode_code
from ..state import TrainState, fixed_shapes


def auxk_loss(sae, x: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor, state: TrainState | None,
              k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """L_aux per instance, (inst,); 0 for an instance with no dead latent, and outside training.

    x: the SAE's input, (batch, inst, d_hidden); pre: its centred pre-activations without autograd,
    (batch, inst, d_sae); residual: x - x̂, (batch, inst, d_hidden); k_aux: (inst,) whole numbers,
    k_aux_max = max(k_aux).
    """
    dead = state.dead() if state is not None else None
    if dead is None:
        return x.new_zeros(sae.n_instances)
    entries = selection.aux_k(pre, dead, k_aux, k_aux_max, fixed_shapes(state, x.device))
    if entries is None:
        return x.new_zeros(sae.n_instances)
    reconstruction = decode_code(sae, code_at(sae, x, *entries), bias=False)
    loss = (residual.detach().float() - reconstruction).pow(2).sum(-1).mean(0)
    return torch.where(dead.any(-1), loss, 0.0)

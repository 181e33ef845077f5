"""AuxK, the auxiliary loss that revives dead latents (Gao et al. 2024, "Scaling and evaluating sparse
autoencoders", eq. 4):

    L_aux = ||e - ê||²,   e = x - x̂ (detached),   ê = W_dec z_aux (no decoder bias),

where z_aux keeps each row's k_aux largest positive pre-activations among the dead latents (no firing
in the last `dead_window` samples). An instance with no dead latent has no auxiliary loss. z_aux is a
sparse code (sae/sparse.py) whose entries sae/selection.aux_k chooses; an eager CPU step computes it
instead as a dense block over the dead latents' columns (selection.dead_block): with k_aux = 64 a
sparse code of batch·k_aux entries, mostly padding, cost more than the rest of the step there
(task P at 1 thread on a loaded machine: 5,000 samples/s, SAELens 17,000, about 40,000 with the block).
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
    if fixed_shapes(state, x.device):
        reconstruction = decode_code(sae, code_at(sae, x, *selection.aux_k(pre, dead, k_aux, k_aux_max)), bias=False)
    else:
        block = selection.dead_block(pre, dead, k_aux)
        if block is None:
            return x.new_zeros(sae.n_instances)
        reconstruction = decode_dead_block(sae, x, *block)
    loss = (residual.detach().float() - reconstruction).pow(2).sum(-1).mean(0)
    return torch.where(dead.any(-1), loss, 0.0)


def decode_dead_block(sae, x: torch.Tensor, columns: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """W_dec z_aux with z_aux = keep · ReLU(W_enc (x - b_dec) + b_enc) on the given columns only, with
    autograd: (batch, inst, d_hidden). columns: (inst, width); keep: (inst, batch, width) 0/1."""
    d_hidden = sae.d_hidden
    with torch.autocast(x.device.type, enabled=False):
        encoder = sae.W_enc.gather(2, columns[:, None, :].expand(-1, d_hidden, -1))  # (inst, d_hidden, width)
        bias = (sae.b_enc - sae.encoded_b_dec()).gather(1, columns)  # (inst, width)
        z = torch.relu(torch.baddbmm(bias[:, None, :], x.float().transpose(0, 1), encoder)) * keep
        decoder = sae.W_dec.gather(1, columns[:, :, None].expand(-1, -1, d_hidden))  # (inst, width, d_hidden)
        return torch.bmm(z, decoder).transpose(0, 1)

"""AuxK, the auxiliary loss that revives dead latents (Gao et al. 2024, eq. 4), on the dead columns only.

    L_aux = ||e - ê||²,   e = x - x̂ (detached),   ê = W_dec z_aux (no decoder bias),
where z_aux keeps the k_aux largest positive pre-activations among the dead latents. Only
dead latents take part, so the loss is computed on their encoder columns and decoder rows
alone, gathered into a block of width m = the most dead latents of any instance: its cost
grows with the number of dead latents, not with d_sae. On an accelerator, where reading m
back would stall the queue every step, m is d_sae (every latent, alive ones masked).
"""

from __future__ import annotations

import torch


def any_dead(dead: torch.Tensor | None) -> bool:
    """Whether AuxK has anything to do. On CPU the answer is free; on an accelerator asking would
    stall the queue every step, so there AuxK always runs (masked to 0 where nothing is dead)."""
    if dead is None:
        return False
    return dead.device.type != "cpu" or bool(dead.any())


def auxk_loss(sae, x: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None,
              k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """L_aux per instance, (inst,); 0 for an instance with no dead latent.

    x: the SAE's input, (batch, inst, d_hidden); residual: x - x̂, same shape; dead: bool
    (inst, d_sae); k_aux: (inst,) whole numbers, k_aux_max = max(k_aux). Runs in float32 even
    under bf16 autocast: its matmuls are narrow, and narrow bf16 matmuls are slow on CPUs.
    """
    n_instances = sae.n_instances
    if not any_dead(dead):
        return x.new_zeros(n_instances)
    with torch.autocast(x.device.type, enabled=False):
        n_dead = dead.sum(-1)  # (inst,)
        width = int(n_dead.max()) if dead.device.type == "cpu" else sae.d_sae
        columns = torch.sort(dead.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :width]  # dead first
        valid = torch.arange(width, device=dead.device) < n_dead[:, None]  # (inst, width)
        W_enc = sae.W_enc.gather(2, columns[:, None, :].expand(-1, sae.d_hidden, -1))  # (inst, d_hidden, width)
        W_dec = sae.W_dec.gather(1, columns[:, :, None].expand(-1, -1, sae.d_hidden))  # (inst, width, d_hidden)
        # W_enc (x - b_dec) + b_enc as W_enc x + (b_enc - W_enc b_dec): b_dec's gradient then costs a
        # vector-matrix product, not a backward matmul over the batch (as in SAE.centred_projection)
        bias = sae.b_enc.gather(1, columns) - torch.einsum("id,idw->iw", sae.b_dec, W_enc)
        pre = torch.baddbmm(bias[:, None, :], x.float().transpose(0, 1), W_enc).transpose(0, 1)  # (batch, inst, width)
        z_aux = _top_dead(pre, valid, k_aux, k_aux_max)
        e_hat = torch.einsum("biw,iwd->bid", z_aux, W_dec)
        loss = (residual.detach().float() - e_hat).pow(2).sum(-1).mean(0)
    return torch.where(n_dead > 0, loss, 0.0)


def _top_dead(pre: torch.Tensor, valid: torch.Tensor, k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """z_aux: per row, the k_aux[i] largest positive entries of `pre` (batch, inst, width) among the
    `valid` (inst, width) columns, ReLU'd, the rest 0.

    On CPU a row seldom has more than k_aux positive dead pre-activations (on the standard
    BatchTopK task, 2.6 rows in a million), and then every positive entry is kept without a
    topk, which costs more than the rest of AuxK together.
    """
    positive = (pre.detach() > 0) & valid
    if pre.device.type == "cpu" and bool((positive.sum(-1) <= k_aux).all()):
        return torch.relu(pre) * valid
    candidates = torch.where(positive, pre.detach(), -1.0)  # padding and non-positive entries rank last
    kept = min(k_aux_max, pre.shape[-1])
    top, index = candidates.topk(kept, dim=-1)
    keep = (torch.arange(kept, device=pre.device) < k_aux[:, None]) & (top > 0)
    return torch.zeros_like(pre).scatter(-1, index, torch.relu(pre.gather(-1, index)) * keep)

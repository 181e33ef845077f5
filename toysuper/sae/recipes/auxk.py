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

from ...float_masks import positive


def any_dead(dead: torch.Tensor | None) -> bool:
    """Whether AuxK has anything to do. On CPU the answer is free; on an accelerator asking would
    stall the queue every step, so there AuxK always runs (masked to 0 where nothing is dead)."""
    if dead is None:
        return False
    return dead.device.type != "cpu" or bool(dead.any())


def auxk_loss(sae, x: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None,
              k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """L_aux per instance, (inst,); 0 for an instance with no dead latent.

    x: the SAE's input, (batch, inst, d_hidden); pre: its centred pre-activations, (batch, inst,
    d_sae), as the latent selection computed them (any dtype; AuxK reads the dead columns' values
    and sends its gradient to the weights itself, so a matmul is not repeated); residual: x - x̂,
    (batch, inst, d_hidden); dead: bool (inst, d_sae); k_aux: (inst,) whole numbers, k_aux_max =
    max(k_aux). Autocast is off inside: under bf16 autocast the matmuls and what passes between
    them are cast to bf16 explicitly, and the error, the loss and the gradients reaching the
    weights stay float32 (see DeadLatentReconstruction).
    """
    n_instances = sae.n_instances
    if not any_dead(dead):
        return x.new_zeros(n_instances)
    device = x.device.type
    matmul_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    with torch.autocast(device, enabled=False):
        n_dead = dead.sum(-1)  # (inst,)
        width = int(n_dead.max()) if dead.device.type == "cpu" else sae.d_sae
        # the dead latents' indices first, ascending
        columns = torch.sort(dead.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :width]
        valid = torch.arange(width, device=dead.device) < n_dead[:, None]  # (inst, width)
        W_enc = sae.W_enc.gather(2, columns[:, None, :].expand(-1, sae.d_hidden, -1))  # (inst, d_hidden, width)
        W_dec = sae.W_dec.gather(1, columns[:, :, None].expand(-1, -1, sae.d_hidden))  # (inst, width, d_hidden)
        b_enc = sae.b_enc.gather(1, columns)  # (inst, width)
        batch = x.shape[0]
        pre_dead = pre.detach().transpose(0, 1).gather(2, columns[:, None, :].expand(-1, batch, -1))
        loss = DeadLatentReconstruction.apply(x.float().transpose(0, 1), pre_dead.float(), W_enc, b_enc, sae.b_dec,
                                              W_dec, residual.detach().float().transpose(0, 1), valid, k_aux,
                                              k_aux_max, matmul_dtype)
    return torch.where(n_dead > 0, loss, 0.0)


class DeadLatentReconstruction(torch.autograd.Function):
    """||r - z W_dec||² per instance, averaged over the batch, z = the kept part of ReLU(pre),
    pre = (x - b_dec) W_enc + b_enc.

    x: (inst, batch, d) and r: (inst, batch, d), no gradient; pre: (inst, batch, width), already
    computed (by the latent selection), no gradient; W_enc: (inst, d, width), b_enc: (inst,
    width) and b_dec: (inst, d) take pre's gradient; W_dec: (inst, width, d); valid: bool
    (inst, width). The matmuls run in `matmul_dtype` (bf16 under bf16 autocast: 2.5× float32's
    speed for these narrow shapes on a CPU with AVX512-BF16), and so do z and the gradient
    passed between them; the error, the loss and the weights' gradients are float32. The
    backward pass is written out (three matmuls over the batch and a mask; b_dec's gradient is
    a vector-matrix product, as in SAE.centred_projection); tests/test_recipes.py checks it
    against the dense formula, and its bf16 version against float32.
    """

    @staticmethod
    def forward(ctx, x, pre, W_enc, b_enc, b_dec, W_dec, r, valid, k_aux, k_aux_max, matmul_dtype=torch.float32):
        low = matmul_dtype
        z = kept_dead(pre, valid, k_aux, k_aux_max).to(low)  # (inst, batch, width), as the matmuls take it
        W_dec_low = W_dec.to(low)
        error = r - torch.bmm(z, W_dec_low).float()
        ctx.save_for_backward(x, W_enc, b_dec, W_dec_low, z, error)
        return error.pow(2).sum(-1).mean(-1)

    @staticmethod
    def backward(ctx, grad):
        x, W_enc, b_dec, W_dec_low, z, error = ctx.saved_tensors
        low = z.dtype
        grad_error = (error * (-2.0 / error.shape[1] * grad[:, None, None])).to(low)  # ∂/∂(z W_dec)
        grad_W_dec = torch.bmm(z.transpose(1, 2), grad_error).float()
        # ∂/∂pre stays in the matmul dtype (it only feeds the next matmul and a sum); dropped entries: 0
        grad_pre = torch.bmm(grad_error, W_dec_low.transpose(1, 2)).mul_(positive(z))
        grad_b_enc = grad_pre.sum(1, dtype=torch.float32)  # (inst, width)
        # pre = x W_enc - b_dec W_enc + b_enc: the b_dec terms are rank one over the batch
        grad_W_enc = torch.bmm(x.to(low).transpose(1, 2), grad_pre).float()
        grad_W_enc.sub_(b_dec[:, :, None] * grad_b_enc[:, None, :])
        grad_b_dec = -torch.bmm(W_enc, grad_b_enc[:, :, None]).squeeze(-1)
        return None, None, grad_W_enc, grad_b_enc, grad_b_dec, grad_W_dec, None, None, None, None, None


def kept_dead(pre: torch.Tensor, valid: torch.Tensor, k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """z_aux: per row, the k_aux[i] largest positive entries of `pre` (inst, batch, width) among the
    `valid` (inst, width) columns, the rest 0.

    On CPU a row seldom has more than k_aux positive dead pre-activations (on the standard
    BatchTopK task, 2.6 rows in a million), and then every positive entry is kept without a
    topk, which costs more than the rest of AuxK together.
    """
    z = torch.relu(pre).mul_(valid.to(pre.dtype)[:, None, :])  # every positive valid entry (float masks: fast)
    if pre.device.type == "cpu" and bool((positive(z).sum(-1) <= k_aux[:, None]).all()):
        return z
    candidates = torch.where(z > 0, z, -1.0)  # padding and non-positive entries rank last
    kept = min(k_aux_max, pre.shape[-1])
    top, index = candidates.topk(kept, dim=-1)
    keep = (torch.arange(kept, device=pre.device) < k_aux[:, None, None]) & (top > 0)
    return torch.zeros_like(pre).scatter(-1, index, top * keep)

"""Pieces several recipes share: initialisations, the unit-norm decoder, TopK and AuxK."""

from __future__ import annotations

import torch

from ..sparse_codes import decode_code, top_k_code
from ..state import TrainState


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x̂||² per sample, averaged over the batch: (batch, inst, d) -> (inst,)."""
    return (x - x_hat).pow(2).sum(-1).mean(0)


def l0(acts: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per sample: (batch, inst, d_sae) -> (inst,)."""
    return torch.count_nonzero(acts, dim=-1).float().mean(0)


def warmup(state: TrainState | None, fraction: float) -> float:
    """Linear ramp from 0 to 1 over the first `fraction` of training (1 outside training)."""
    if state is None or fraction <= 0:
        return 1.0
    return min(1.0, state.progress / fraction)


def per_instance(generators: list[torch.Generator], draw) -> torch.Tensor:
    """Stack draw(generator) over instances: each instance's numbers come from its own seed."""
    return torch.stack([draw(generator) for generator in generators])


def random_decoder(sae, generators, norm: float) -> torch.Tensor:
    """Decoder rows in uniformly random directions with the given norm, (inst, d_sae, d_hidden)."""
    device = sae.W_dec.device
    W = per_instance(generators, lambda g: torch.randn(sae.d_sae, sae.d_hidden, generator=g, device=device))
    return W * (norm / W.norm(dim=-1, keepdim=True))


def tied_init(sae, generators, decoder_norm: float, encoder_norm: float | None = None) -> None:
    """Random decoder directions of norm `decoder_norm`, the encoder tied to them (W_enc = W_decᵀ,
    rescaled to rows of norm `encoder_norm` when given), zero biases."""
    W_dec = random_decoder(sae, generators, decoder_norm)
    sae.W_dec.copy_(W_dec)
    W_enc = W_dec if encoder_norm is None else W_dec * (encoder_norm / decoder_norm)
    sae.W_enc.copy_(W_enc.transpose(-1, -2))
    sae.b_enc.zero_()
    sae.b_dec.zero_()


class UnitNormDecoder:
    """Decoder rows held at unit norm (Bricken et al. 2023).

    Before each step the gradient component parallel to each row is removed (a step along it
    would only change the row's norm, which renormalising then undoes); after each step the
    rows are rescaled to norm 1.
    """

    def before_optimizer_step(self, sae, state):
        grad = sae.W_dec.grad
        if grad is not None:
            W = sae.W_dec.detach()
            W = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            grad -= (grad * W).sum(-1, keepdim=True) * W

    def after_optimizer_step(self, sae, state, terms):
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def keep_top_k(values: torch.Tensor, k: torch.Tensor, k_max: int) -> torch.Tensor:
    """Per row of the last axis, keep the k[i] largest entries of `values` and zero the rest.

    values: (batch, inst, n); k: (inst,) whole numbers, k_max = max(k). Ties broken by
    torch.topk. Gradients flow to the kept entries only.
    """
    top, index = values.topk(k_max, dim=-1)
    rank = torch.arange(k_max, device=values.device)
    top = top * (rank < k[:, None])  # (batch, inst, k_max): instances with a smaller k keep fewer
    return torch.zeros_like(values).scatter(-1, index, top)


def any_dead(dead: torch.Tensor | None) -> bool:
    """Whether AuxK has anything to do. On CPU the answer is free; on an accelerator asking would
    stall the queue every step, so there AuxK always runs (masked to 0 where nothing is dead)."""
    if dead is None:
        return False
    return dead.device.type != "cpu" or bool(dead.any())


def auxk_loss(sae, x_centred: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None,
              k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024, eq. 4): ||e - ê||² with ê = W_dec z_aux, per instance (inst,).

    e = x - x̂ (detached), z_aux keeps the k_aux largest positive pre-activations among the
    dead latents (no decoder bias: ê models the residual). Only dead latents receive its
    gradient. 0 for an instance with no dead latent. x_centred: the encoder input x - b_dec,
    (batch, inst, d_hidden); pre: its pre-activations (batch, inst, d_sae), used only to rank.
    """
    if not any_dead(dead):
        return pre.new_zeros(pre.shape[1])
    candidates = torch.where(dead, torch.relu(pre.detach()), -1.0)  # alive latents rank below every dead one
    code = top_k_code(sae, x_centred, pre, k_aux, min(k_aux_max, sae.d_sae), candidates=candidates)
    e_hat = decode_code(sae, code, bias=False)
    loss = (residual.detach() - e_hat).pow(2).sum(-1).mean(0)
    return torch.where(dead.any(-1), loss, 0.0)

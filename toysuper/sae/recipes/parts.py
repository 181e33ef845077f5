"""Pieces several recipes share: initialisations, the unit-norm decoder, TopK and AuxK."""

from __future__ import annotations

import math

import torch

from ..state import TrainState


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x̂||² per sample, averaged over the batch: (batch, inst, d) -> (inst,)."""
    return (x - x_hat).pow(2).sum(-1).mean(0)


def l0(acts: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per sample: (batch, inst, d_sae) -> (inst,)."""
    return (acts != 0).float().sum(-1).mean(0)


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


def tied_init(sae, generators, decoder_norm: float) -> None:
    """Random decoder directions of norm `decoder_norm`, W_enc = W_decᵀ, zero biases."""
    W_dec = random_decoder(sae, generators, decoder_norm)
    sae.W_dec.copy_(W_dec)
    sae.W_enc.copy_(W_dec.transpose(-1, -2))
    sae.b_enc.zero_()
    sae.b_dec.zero_()


def kaiming_init(sae, generators) -> None:
    """Towards Monosemanticity: W_enc and W_dec drawn independently (He-uniform), decoder rows
    then rescaled to unit norm, zero biases."""
    device = sae.W_enc.device
    bound = math.sqrt(6 / sae.d_hidden)
    sae.W_enc.copy_(per_instance(generators, lambda g: torch.rand(
        sae.d_hidden, sae.d_sae, generator=g, device=device) * 2 * bound - bound))
    W_dec = per_instance(generators, lambda g: torch.rand(
        sae.d_sae, sae.d_hidden, generator=g, device=device) * 2 - 1)
    sae.W_dec.copy_(W_dec / W_dec.norm(dim=-1, keepdim=True))
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


def auxk_loss(sae, pre_acts: torch.Tensor, residual: torch.Tensor, dead: torch.Tensor | None,
              k_aux: torch.Tensor, k_aux_max: int) -> torch.Tensor:
    """AuxK (Gao et al. 2024, eq. 4): ||e - ê||² with ê = W_dec z_aux.

    e = x - x̂ (detached), z_aux keeps the k_aux largest positive pre-activations among the
    dead latents (no decoder bias: ê models the residual). Only dead latents receive its
    gradient. 0 for an instance with no dead latent. Returns (inst,).
    """
    if dead is None:
        return pre_acts.new_zeros(pre_acts.shape[1])
    k_aux_max = min(k_aux_max, sae.d_sae)
    candidates = torch.where(dead, torch.relu(pre_acts), -1.0)  # alive latents can never be picked over a dead one
    top, index = candidates.topk(k_aux_max, dim=-1)
    rank = torch.arange(k_aux_max, device=pre_acts.device)
    keep = (rank < k_aux[:, None]) & (top >= 0)  # top < 0 only when fewer than k_aux latents are dead
    z_aux = torch.zeros_like(pre_acts).scatter(-1, index, torch.where(keep, top, 0.0))
    e_hat = torch.einsum("bis,isd->bid", z_aux, sae.W_dec)
    loss = (residual.detach() - e_hat).pow(2).sum(-1).mean(0)
    return torch.where(dead.any(-1), loss, 0.0)

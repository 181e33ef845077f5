"""Pieces several recipes share: the squared error, warm-ups, initialisations, the unit-norm decoder."""

from __future__ import annotations

import torch

from ..state import TrainState
from .base import Hook


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x̂||² per sample, averaged over the batch: (batch, inst, d) -> (inst,)."""
    return (x_hat - x).pow(2).sum(-1).mean(0)


def activity(acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the trainer reads off non-negative activations (batch, inst, d_sae): `fired`, which latents
    fired in the batch, bool (inst, d_sae), and `l0`, the mean number firing per sample, (inst,)."""
    acts = acts.detach()
    return {"fired": acts.amax(0) > 0, "l0": (acts > 0).float().sum(-1).mean(0)}


def warmup(state: TrainState | None, fraction: float | torch.Tensor) -> torch.Tensor | float:
    """Linear ramp from 0 to 1 over the first `fraction` of training (1 outside training, and for a
    fraction of 0): a 0-d tensor for a number, (inst,) for a per-instance fraction (inst,)."""
    if state is None:
        return 1.0
    if isinstance(fraction, torch.Tensor):  # per instance, without reading it back
        return torch.where(fraction > 0, (state.progress() / fraction.clamp_min(1e-12)).clamp(max=1.0), 1.0)
    if fraction <= 0:
        return 1.0
    return (state.progress() / fraction).clamp(max=1.0)


def check_fraction(sae, name: str) -> None:
    """Reject a per-instance hyperparameter outside [0, 1] (a fraction of training)."""
    if sae.hyperparameter_max(name) > 1:
        raise ValueError(f"{name} must be a fraction of training in [0, 1], got {getattr(sae, name).tolist()}")


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


class UnitNormDecoder(Hook):
    """Decoder rows held at unit norm (Bricken et al. 2023).

    Before each step the gradient component parallel to each row is removed (a step along it
    would only change the row's norm, which renormalising then undoes); after each step the
    rows are rescaled to norm 1.
    """

    def before_optimizer_step(self, sae, state):
        grad = sae.W_dec.grad
        if grad is not None:
            W = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
            grad -= (grad * W).sum(-1, keepdim=True) * W

    def after_optimizer_step(self, sae, state, out):
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


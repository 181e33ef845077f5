"""Pieces several recipes share: the squared error, warm-ups, the tied start, the unit-norm decoder."""

from __future__ import annotations

import torch

from ..state import TrainState
from .base import Hook


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x̂||² per sample, averaged over the batch: (batch, inst, d) -> (inst,)."""
    return (x_hat - x).pow(2).sum(-1).mean(0)


def activity(acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """LossOutput's `fired` (inst, d_sae) and `l0` (inst,) from non-negative activations (batch, inst, d_sae)."""
    acts = acts.detach()
    return {"fired": acts.amax(0) > 0, "l0": (acts > 0).float().sum(-1).mean(0)}


def warmup(state: TrainState | None, fraction: torch.Tensor) -> torch.Tensor | float:
    """Linear ramp from 0 to 1 over the first `fraction` (inst,) of training: (inst,); 1 outside training."""
    if state is None:
        return 1.0
    return torch.where(fraction > 0, (state.progress() / fraction.clamp_min(1e-12)).clamp(max=1.0), 1.0)


def check_fraction(sae, name: str) -> None:
    """Reject a per-instance hyperparameter outside [0, 1] (a fraction of training)."""
    if sae.hyperparameter_max(name) > 1:
        raise ValueError(f"{name} must be a fraction of training in [0, 1], got {getattr(sae, name).tolist()}")


def tied_init(sae, generators, decoder_norm: float, encoder_norm: float | None = None) -> None:
    """Decoder rows in random directions of norm `decoder_norm` (instance i's from generators[i]), the
    encoder tied to them (W_enc = W_decᵀ, rescaled to rows of norm `encoder_norm` when given), zero biases."""
    W = torch.stack([torch.randn(sae.d_sae, sae.d_hidden, generator=g, device=sae.W_dec.device) for g in generators])
    W_dec = W * (decoder_norm / W.norm(dim=-1, keepdim=True))
    sae.W_dec.copy_(W_dec)
    W_enc = W_dec if encoder_norm is None else W_dec * (encoder_norm / decoder_norm)
    sae.W_enc.copy_(W_enc.transpose(-1, -2))
    sae.b_enc.zero_()
    sae.b_dec.zero_()


class UnitNormDecoder(Hook):
    """Decoder rows held at unit norm (Bricken et al. 2023): before each step the gradient's component
    along each row is removed (renormalising would undo it), after it the rows are rescaled to norm 1."""

    def before_optimizer_step(self, sae, state):
        grad = sae.W_dec.grad
        if grad is not None:
            W = torch.nn.functional.normalize(sae.W_dec.detach(), dim=-1)
            grad -= (grad * W).sum(-1, keepdim=True) * W

    def after_optimizer_step(self, sae, state, out):
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)

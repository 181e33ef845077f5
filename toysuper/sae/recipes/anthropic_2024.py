"""The hand-worked SAE: ReLU encoder, unconstrained decoder, decoder-norm-weighted L1.

Templeton et al. 2024, "Scaling Monosemanticity", and Anthropic's April 2024 training
update:
    f = ReLU(W_enc x + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i f_i ||W_dec[i]||₂
The norm weighting stops the SAE from shrinking f while growing the decoder. λ is warmed
up linearly from 0 over the first 5% of training. Decoder rows start as random directions
of norm 0.1 and the encoder starts tied to the decoder (W_enc = W_decᵀ), which keeps latents
alive without resampling.
"""

from __future__ import annotations

import torch

from .base import Recipe

L1_WARMUP_FRACTION = 0.05
INIT_DECODER_NORM = 0.1


def tied_init(sae, generator: torch.Generator, decoder_norm: float) -> None:
    """Random decoder directions of norm `decoder_norm`, W_enc = W_decᵀ, zero biases."""
    shape = (sae.n_instances, sae.d_sae, sae.d_hidden)
    W_dec = torch.randn(shape, generator=generator, device=sae.W_dec.device)
    W_dec *= decoder_norm / W_dec.norm(dim=-1, keepdim=True)
    sae.W_dec.copy_(W_dec)
    sae.W_enc.copy_(W_dec.transpose(-1, -2))
    sae.b_enc.zero_()
    sae.b_dec.zero_()


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """||x - x̂||² per sample, averaged over the batch: (batch, inst, d) -> (inst,)."""
    return (x - x_hat).pow(2).sum(-1).mean(0)


class Anthropic2024(Recipe):
    name = "anthropic_2024"
    hyperparameters = {"l1_coefficient": 1.0}
    citation = "Templeton et al. 2024, Scaling Monosemanticity; Anthropic, April 2024 update"

    def init_parameters(self, sae, generator):
        tied_init(sae, generator, INIT_DECODER_NORM)

    def encode(self, sae, x):
        return torch.relu(sae.pre_activations(x))

    def loss(self, sae, x, progress):
        acts = self.encode(sae, x)
        x_hat = sae.decode(acts)
        mse = squared_error(x, x_hat)
        decoder_norms = sae.W_dec.norm(dim=-1)  # (inst, d_sae)
        sparsity = (acts * decoder_norms).sum(-1).mean(0)
        warmup = min(1.0, progress / L1_WARMUP_FRACTION)
        loss = mse + warmup * sae.l1_coefficient * sparsity
        active = acts > 0
        return {"loss": loss, "mse": mse, "sparsity": sparsity, "l0": active.float().sum(-1).mean(0),
                "fired": active.any(0)}

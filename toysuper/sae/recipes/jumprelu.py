"""JumpReLU SAE: a learnt threshold per latent, trained through a sparsity penalty.

Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
Sparse Autoencoders", and Lieberum et al. 2024, "Gemma Scope" (Google DeepMind):
    π = W_enc x + b_enc,   f = JumpReLU_θ(π) = π · H(π - θ),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i H(π_i - θ_i)          (λ times the L0 of f),
with θ = exp(log θ) learnt per latent. H has no useful gradient, so both the JumpReLU and the
step H are given straight-through pseudo-derivatives with a rectangle kernel
K(u) = 1[-1/2 < u <= 1/2] of bandwidth ε:
    ∂JumpReLU/∂π = H(π - θ),   ∂JumpReLU/∂θ = -(θ/ε) K((π - θ)/ε),
    ∂H(π - θ)/∂π = 0,          ∂H(π - θ)/∂θ = -(1/ε) K((π - θ)/ε).

The defaults follow Anthropic's way of training the same SAE (Conerly et al., "Circuits
Updates – January 2025"): the L0 term is replaced by a saturating penalty that also reaches
the encoder, and a pre-activation term pulls latents that never fire back towards their
thresholds,
    loss = ||x - x̂||² + λ Σ_i tanh(c · f_i ||W_dec,i||) + λ_P Σ_i ReLU(θ_i - π_i) ||W_dec,i||,
(decoder rows are held at unit norm here, as in the public GDM code; θ is detached in the last
term, whose job is to move the pre-activations). tanh_scale = c = 0 selects the Gemma Scope
L0 penalty above, pre_act_coefficient = λ_P = 0 drops the pre-activation term; both are per
instance.

Other choices kept from the papers: inputs scaled to E||x||² = 1, λ warmed up linearly from
0 over the first 10% of training, Adam with β1 = 0, β2 = 0.999, W_enc initialised to W_decᵀ,
zero biases. Changed for runs of millions rather than billions of samples: ε = θ_init = 0.05
instead of 0.001 (Adam moves log θ by about the learning rate per step, so in 2,000 steps θ
cannot climb from 0.001 to the scale of the pre-activations, about 0.1; SAELens also uses
ε = 0.05). On the standard task (README) the Gemma Scope penalty plateaus near recovered@0.9
≈ 0.7 with a fifth of the latents dead, over about 40 settings tried; Anthropic's gives 0.84.
"""

from __future__ import annotations

import torch

from .base import Recipe
from .parts import UnitNormDecoder, activity, squared_error, tied_init, warmup

L0_WARMUP_FRACTION = 0.1


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1 on (-1/2, 1/2], else 0."""
    return ((u > -0.5) & (u <= 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """f = π · H(π - θ) with the straight-through gradients above.

    pre: (batch, inst, d_sae); threshold: (inst, d_sae); bandwidth: (inst, 1).
    """

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold, bandwidth)
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold, bandwidth = ctx.saved_tensors
        kernel = rectangle((pre - threshold) / bandwidth)
        grad_threshold = -(threshold / bandwidth * kernel * grad).sum(0)
        return grad * (pre > threshold), grad_threshold, None


class StepFunction(torch.autograd.Function):
    """H(π - θ) with ∂/∂π = 0 and ∂/∂θ = -(1/ε) K((π - θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold, bandwidth)
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold, bandwidth = ctx.saved_tensors
        kernel = rectangle((pre - threshold) / bandwidth)
        return torch.zeros_like(pre), -(kernel * grad / bandwidth).sum(0), None


class JumpReLU(UnitNormDecoder, Recipe):
    name = "jumprelu"
    hyperparameters = {"l0_coefficient": 0.04, "threshold_init": 0.05, "bandwidth": 0.05, "tanh_scale": 4.0,
                       "pre_act_coefficient": 3e-4}
    positive_hyperparameters = frozenset({"threshold_init", "bandwidth"})
    citation = ("Rajamanoharan et al. 2024, Jumping Ahead (JumpReLU SAEs); Lieberum et al. 2024, Gemma Scope; "
                "Conerly et al., Anthropic Circuits Updates January 2025")
    input_scaling = "unit_mean_squared_norm"
    train_defaults = {"lr": 3e-3, "betas": (0.0, 0.999), "b_dec_init": "zeros", "grad_clip": None}

    def register(self, sae):
        sae.log_threshold = torch.nn.Parameter(torch.zeros(sae.n_instances, sae.d_sae, device=sae.W_dec.device))

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0)
        self.reset_latents(sae, torch.ones_like(sae.log_threshold, dtype=torch.bool))

    def reset_latents(self, sae, mask):
        start = sae.threshold_init.log()[:, None].expand_as(sae.log_threshold)
        sae.log_threshold.copy_(torch.where(mask, start, sae.log_threshold))

    def per_latent_parameters(self, sae):
        return {"log_threshold": sae.log_threshold}

    def encode(self, sae, x):
        pre = sae.pre_activations(x)
        return pre * (pre > sae.log_threshold.exp())

    def loss(self, sae, x, state=None):
        pre = sae.pre_activations(x)
        threshold = sae.log_threshold.exp()
        bandwidth = sae.bandwidth[:, None]
        acts = JumpReLUFunction.apply(pre, threshold, bandwidth)
        mse = squared_error(x, sae.decode(acts))
        norms = sae.W_dec.norm(dim=-1)  # (inst, d_sae); 1 after every step, the decoder being held at unit norm
        sparsity = self.sparsity(sae, pre, threshold, bandwidth, acts, norms)
        pre_act = pre.new_zeros(sae.n_instances)
        if sae.hyperparameter_max("pre_act_coefficient") > 0:  # known on the host: skip it when no instance uses it
            pre_act = torch.einsum("bis,is->bi", torch.relu(threshold.detach() - pre), norms).mean(0)
        loss = (mse + warmup(state, L0_WARMUP_FRACTION) * sae.l0_coefficient * sparsity
                + sae.pre_act_coefficient * pre_act)
        return {"loss": loss, "mse": mse, "sparsity": sparsity, "pre_act": pre_act, **activity(acts)}

    def sparsity(self, sae, pre, threshold, bandwidth, acts, norms) -> torch.Tensor:
        """Per instance (inst,): Σ tanh(c f ||W_dec||) where tanh_scale c > 0, the smoothed L0
        Σ H(π - θ) where c = 0.

        Each form is computed only if some instance uses it (known on the host, no sync).
        """
        total = 0.0
        if sae.hyperparameter_max("tanh_scale") > 0:
            total = torch.tanh(acts * (sae.tanh_scale[:, None] * norms)).sum(-1).mean(0)  # 0 where c = 0
        if sae.hyperparameter_min("tanh_scale") == 0:
            l0_smooth = StepFunction.apply(pre, threshold, bandwidth).sum(-1).mean(0)
            total = total + torch.where(sae.tanh_scale == 0, l0_smooth, 0.0)
        return total

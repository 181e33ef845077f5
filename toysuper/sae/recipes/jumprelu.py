"""JumpReLU SAE: a learnt threshold per latent, trained through a sparsity penalty.

Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
Sparse Autoencoders", and Lieberum et al. 2024, "Gemma Scope" (Google DeepMind):
    π = W_enc x + b_enc,   f = JumpReLU_θ(π) = π · H(π - θ),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i H(π_i - θ_i)          (λ times the L0 of f),
with θ = exp(log θ) learnt per latent. H has no useful gradient, so both the JumpReLU and the
step H get straight-through pseudo-derivatives with a rectangle kernel K(u) = 1[-1/2 < u <= 1/2]
of bandwidth ε:
    ∂JumpReLU/∂π = H(π - θ),   ∂JumpReLU/∂θ = -(θ/ε) K((π - θ)/ε),
    ∂H(π - θ)/∂π = 0,          ∂H(π - θ)/∂θ = -(1/ε) K((π - θ)/ε).

The defaults follow Anthropic's way of training it (Conerly et al., "Circuits Updates – January
2025"): a saturating penalty that also reaches the encoder, and a pre-activation term that pulls
latents that never fire back towards their thresholds (θ detached there),
    loss = ||x - x̂||² + λ Σ_i tanh(c · f_i ||W_dec,i||) + λ_P Σ_i ReLU(θ_i - π_i) ||W_dec,i||,
with unit-norm decoder rows, as in the public GDM code. sparsity_penalty = "l0" selects the Gemma
Scope loss above (per SAE); pre_act_coefficient = λ_P = 0 drops the last term (per instance).
From the papers: inputs scaled to E||x||² = 1, λ warmed up linearly over the first `l0_warmup` (10%),
Adam with β1 = 0, W_enc = W_decᵀ at the start, zero biases. For runs of millions rather than billions
of samples (docs/tuning.md): ε = 0.05, θ_init = 0.01, c = 1, λ = 0.2, lr 7·10⁻³, dead latents resampled.
"""

from __future__ import annotations

import torch

from .base import LossOutput, Recipe
from .parts import UnitNormDecoder, check_fraction, squared_error, tied_init, warmup
from .target_l0 import HYPERPARAMETERS as TARGET_L0, TargetL0


class JumpReLUTerms(torch.autograd.Function):
    """The JumpReLU activations and both sparsity penalties with the straight-through gradients above
    written out: a few fused elementwise steps where autograd would keep a dozen (batch, inst, d_sae)
    intermediates (tests/test_recipes.py checks values and gradients against autograd's).

    Inputs: π (batch, inst, d_sae); θ and decoder norms n (inst, d_sae); ε (inst, 1); c (inst,); which
    terms some instance uses (host bools). Returns f = π H(π - θ); the sparsity per instance, Σ tanh(c f n)
    where c > 0 and Σ H(π - θ) where c = 0; Σ ReLU(θ - π) n; each averaged over the batch; and H(π - θ).
    """

    @staticmethod
    def forward(ctx, pre, threshold, norms, bandwidth, tanh_scale, use_tanh, use_l0, use_pre_act):
        batch, n_instances = pre.shape[0], pre.shape[1]
        gap = pre - threshold  # π - θ
        gate = (gap > 0).float()  # H(π - θ)
        acts = pre * gate
        sparsity = pre.new_zeros(n_instances)
        saturation = None
        if use_tanh:  # 0 where c = 0; tanh(y) = 2 sigmoid(2y) - 1, as torch's CPU tanh is 10× slower than sigmoid
            saturation = torch.sigmoid_(acts * (2 * tanh_scale[:, None] * norms)).mul_(2).sub_(1)
            sparsity = saturation.sum(-1).sum(0) / batch
        if use_l0:
            sparsity = sparsity + torch.where(tanh_scale == 0, gate.sum(-1).sum(0) / batch, 0.0)
        below, pre_act = None, pre.new_zeros(n_instances)
        if use_pre_act:
            below = gap.clamp(max=0).sum(0).neg_()  # Σ_batch ReLU(θ - π), (inst, d_sae)
            pre_act = (below * norms).sum(-1) / batch
        ctx.flags = (use_tanh, use_l0, use_pre_act)
        ctx.save_for_backward(gap, gate, acts, saturation, threshold, norms, bandwidth, tanh_scale, below)
        ctx.mark_non_differentiable(gate)
        return acts, sparsity, pre_act, gate

    @staticmethod
    def backward(ctx, grad_acts, grad_sparsity, grad_pre_act, _):
        gap, gate, acts, saturation, threshold, norms, bandwidth, tanh_scale, below = ctx.saved_tensors
        use_tanh, use_l0, use_pre_act = ctx.flags
        batch = gap.shape[0]
        per_sample_sparsity = grad_sparsity / batch  # (inst,); autograd passes zeros for unused outputs
        grad_f, grad_norms = grad_acts, torch.zeros_like(norms)
        if use_tanh:  # ∂ tanh(c f n) = (1 - tanh²) · (c n ∂f + c f ∂n)
            sech2 = saturation.square().neg_().add_(1)
            scale = per_sample_sparsity[:, None] * tanh_scale[:, None]  # (inst, 1)
            grad_f = torch.addcmul(grad_acts, sech2, scale * norms)
            grad_norms += scale * sech2.mul_(acts).sum(0)
        # θ through the rectangle kernel K((π - θ)/ε) = 1 where |π - θ| < ε/2 (its edges have measure 0)
        kernel = (gap.abs() < bandwidth / 2).float()
        grad_threshold = torch.zeros_like(threshold)
        if use_l0:  # from Σ H(π - θ), on the instances that use it
            l0_weight = torch.where(tanh_scale == 0, per_sample_sparsity, 0.0)[:, None]
            grad_threshold -= l0_weight / bandwidth * kernel.sum(0)
        grad_threshold -= (threshold / bandwidth) * kernel.mul_(grad_f).sum(0)  # from f
        # π: ∂f/∂π = H(π - θ); grad_f is ours to overwrite when the tanh term made it
        owned = grad_f if use_tanh else grad_f.clone()
        if use_pre_act:  # ∂ ReLU(θ - π) n = -[θ > π] n ∂π + ReLU(θ - π) ∂n, and [θ > π] = 1 - H off π = θ
            per_sample_pre_act = (grad_pre_act / batch)[:, None]
            pull = -per_sample_pre_act * norms  # (inst, d_sae)
            grad_pre = owned.sub_(pull).mul_(gate).add_(pull)
            grad_norms += per_sample_pre_act * below
        else:
            grad_pre = owned.mul_(gate)
        return grad_pre, grad_threshold, grad_norms, None, None, None, None, None


class JumpReLU(Recipe):
    name = "jumprelu"
    hyperparameters = {"l0_coefficient": 0.2, "threshold_init": 0.01, "bandwidth": 0.05, "tanh_scale": 1.0,
                       "pre_act_coefficient": 3e-4, "l0_warmup": 0.1, **TARGET_L0}
    positive_hyperparameters = frozenset({"threshold_init", "bandwidth", "tanh_scale"})
    options = {"sparsity_penalty": ("tanh", "l0")}  # Anthropic's λ Σ tanh(c f ||W_dec||), or Gemma Scope's λ L0
    sparsity_knob = "l0_coefficient"
    saelens_export = "jumprelu"
    centres_input = False
    citation = ("Rajamanoharan et al. 2024, Jumping Ahead (JumpReLU SAEs); Lieberum et al. 2024, Gemma Scope; "
                "Conerly et al., Anthropic Circuits Updates January 2025")
    constraints, controllers = (UnitNormDecoder(),), (TargetL0(),)
    input_scaling = "unit_mean_squared_norm"
    train_defaults = {"lr": 7e-3, "betas": (0.0, 0.999), "b_dec_init": "zeros", "grad_clip": None, "resample": True}

    def register(self, sae):
        super().register(sae)
        sae.log_threshold = torch.nn.Parameter(torch.zeros(sae.n_instances, sae.d_sae, device=sae.W_dec.device))

    def check(self, sae):
        check_fraction(sae, "l0_warmup")

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
        norms = sae.W_dec.norm(dim=-1)  # (inst, d_sae); 1 after every step, the decoder being held at unit norm
        # each term is computed only if some instance uses it (known on the host, no sync)
        tanh = sae.options["sparsity_penalty"] == "tanh"
        acts, sparsity, pre_act, fires = JumpReLUTerms.apply(
            pre, sae.log_threshold.exp(), norms, sae.bandwidth[:, None], sae.tanh_scale * tanh, tanh, not tanh,
            sae.hyperparameter_max("pre_act_coefficient") > 0)
        mse = squared_error(x, sae.decode(acts))
        coefficient = sae.l0_coefficient * sae.sparsity_multiplier
        loss = (mse + warmup(state, sae.l0_warmup) * coefficient * sparsity
                + sae.pre_act_coefficient * pre_act)
        # f > 0 exactly where π > θ > 0: the activity terms read the gate H(π - θ)
        return LossOutput(loss, {"mse": mse, "sparsity": sparsity, "pre_act": pre_act},
                          fired=fires.amax(0) > 0, l0=fires.sum(-1).mean(0))

"""Reaching a requested L0: a controller on the sparsity coefficient, updated on the device every step.

SynthSAEBench (Chanin & Garriga-Alonso 2026) trains its L1 and JumpReLU SAEs with λ_eff = λ · m, where a
rate-dampened integral controller moves the multiplier m to bring a moving average of the batch L0 to the
target (the control idea: Åström & Murray 2008, "Feedback Systems", ch. 10):
    L̄ ← α L̄ + (1 - α) L0            (α = 0.99; L̄ = the first L0 at the first update)
    r ← β r + (1 - β) ΔL̄            (β = 0.95; the smoothed rate of change)
    e = L̄ - target,   g = 0.03 if e · r < 0 (already moving towards the target) else 1
    m ← clamp(m · (1 ± K g tanh(10 |e| / target)), 0.01, 100)   (+ when the L0 is too high).
K = max(3·10⁻⁴, 30 / steps): SynthSAEBench's gain for 195,000 steps, raised so that m can travel its
range within a short run; their approach damping 0.01 froze m in short runs, hence 0.03 (docs/tuning.md).
The controller acts after `target_l0_start` of training and where target_l0 > 0.
"""

from __future__ import annotations

import torch

from .base import Hook

HYPERPARAMETERS = {"target_l0": 0.0, "target_l0_start": 0.0}
"""target_l0: the L0 to reach (0: no controller); target_l0_start: the fraction of training after which
the controller acts."""


class TargetL0(Hook):
    """The controller of a penalised recipe (in its `controllers`): the recipe multiplies its sparsity
    coefficient by `sae.sparsity_multiplier` (inst,), 1 where no target is set."""

    def register(self, sae):
        for name, value in (("sparsity_multiplier", 1.0), ("smoothed_l0", 0.0), ("l0_rate", 0.0), ("l0_seen", 0.0)):
            sae.register_buffer(name, torch.full((sae.n_instances,), value, device=sae.W_dec.device))

    def after_optimizer_step(self, sae, state, out):
        """One update from this step's L0 (inst,), in place on the SAE's buffers."""
        if state is None or sae.hyperparameter_max("target_l0") <= 0:
            return
        l0, target, first = out.l0.detach(), sae.target_l0, sae.l0_seen == 0
        smoothed = torch.where(first, l0, 0.99 * sae.smoothed_l0 + (1 - 0.99) * l0)
        rate = torch.where(first, 0.0, 0.95 * sae.l0_rate + (1 - 0.95) * (smoothed - sae.smoothed_l0))
        error = smoothed - target
        gain = torch.where(error * rate < 0, 0.03, 1.0) * max(3e-4, 30.0 / state.steps)
        step = gain * torch.tanh(10.0 * error.abs() / target.clamp_min(1e-12))
        moved = (sae.sparsity_multiplier * torch.where(error > 0, 1 + step, 1 - step)).clamp(0.01, 100.0)
        acting = (target > 0) & (state.progress() >= sae.target_l0_start)
        sae.sparsity_multiplier.copy_(torch.where(acting, moved, sae.sparsity_multiplier))
        sae.smoothed_l0.copy_(smoothed)
        sae.l0_rate.copy_(rate)
        sae.l0_seen.add_(1)

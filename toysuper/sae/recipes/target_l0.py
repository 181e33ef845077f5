"""Reaching a requested L0: a controller on the sparsity coefficient, updated on the device every step.

A penalised SAE (L1, tanh or L0 penalty) has no direct knob for its L0: the coefficient λ sets it only
through training. SynthSAEBench (Chanin & Garriga-Alonso 2026) therefore trains its L1 and JumpReLU
SAEs with λ_eff = λ · m, where a rate-dampened integral controller adjusts the multiplier m to bring
an exponential moving average of the batch L0 to the target (the facts of their controller carried
over; the control idea is Åström & Murray 2008, "Feedback Systems", ch. 10):
    L̄ ← α L̄ + (1 - α) L0            (α = 0.99; L̄ = the first L0 at the first update)
    r ← β r + (1 - β) ΔL̄            (β = 0.95; the smoothed rate of change)
    e = L̄ - target,   g = 0.03 if e · r < 0 (already moving towards the target) else 1
    m ← clamp(m · (1 ± K g tanh(10 |e| / target)), 0.01, 100)   (+ when the L0 is too high).
Here K = max(3·10⁻⁴, 30 / steps): SynthSAEBench's gain for its 195,000-step runs, raised for short
runs so that the multiplier can travel its whole range within one run. SynthSAEBench damps an
approach by 0.01, which froze m in short runs; the damping here is 0.03 (docs/tuning.md).
The controller starts after
`target_l0_start` of training (a fraction) and is off where target_l0 = 0. Every quantity is a
per-instance tensor updated in place after the optimiser step, so the step stays free of host syncs.
"""

from __future__ import annotations

import torch

from .base import Hook

L0_SMOOTHING = 0.99
RATE_SMOOTHING = 0.95
GAIN_SCALE = 10.0
CONVERGENCE_GAIN = 0.03
MIN_GAIN = 3e-4
GAIN_PER_RUN = 30.0
MULTIPLIER_RANGE = (0.01, 100.0)

HYPERPARAMETERS = {"target_l0": 0.0, "target_l0_start": 0.0}
"""target_l0: the L0 to reach (0: no controller); target_l0_start: fraction of training after which
the controller acts."""


class TargetL0(Hook):
    """The controller of a penalised recipe (in its `controllers`): the recipe multiplies its sparsity
    coefficient by `sae.sparsity_multiplier` (inst,), 1 where no target is set."""

    def register(self, sae):
        for name, value in (("sparsity_multiplier", 1.0), ("smoothed_l0", 0.0), ("l0_rate", 0.0), ("l0_seen", 0.0)):
            sae.register_buffer(name, torch.full((sae.n_instances,), value, device=sae.W_dec.device))

    def after_optimizer_step(self, sae, state, out):
        if state is not None and sae.hyperparameter_max("target_l0") > 0:
            update_controller(sae, out.l0.detach(), state.progress(), state.steps)


def update_controller(sae, l0: torch.Tensor, progress: torch.Tensor, steps: int) -> None:
    """One controller update from this step's L0 (inst,), in place on the SAE's buffers."""
    target = sae.target_l0
    first = sae.l0_seen == 0
    smoothed = torch.where(first, l0, L0_SMOOTHING * sae.smoothed_l0 + (1 - L0_SMOOTHING) * l0)
    rate = torch.where(first, 0.0, RATE_SMOOTHING * sae.l0_rate + (1 - RATE_SMOOTHING) * (smoothed - sae.smoothed_l0))
    error = smoothed - target
    gain = torch.where(error * rate < 0, CONVERGENCE_GAIN, 1.0) * max(MIN_GAIN, GAIN_PER_RUN / steps)
    step = gain * torch.tanh(GAIN_SCALE * error.abs() / target.clamp_min(1e-12))
    moved = (sae.sparsity_multiplier * torch.where(error > 0, 1 + step, 1 - step)).clamp(*MULTIPLIER_RANGE)
    acting = (target > 0) & (progress >= sae.target_l0_start)
    sae.sparsity_multiplier.copy_(torch.where(acting, moved, sae.sparsity_multiplier))
    sae.smoothed_l0.copy_(smoothed)
    sae.l0_rate.copy_(rate)
    sae.l0_seen.add_(1)

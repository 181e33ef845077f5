"""One SAE training step with shapes set by the configuration and no host sync, for every recipe:

    draw -> recipe loss -> backward -> constraints fix the gradient (unit-norm decoder) -> per-instance
    clip -> scheduled lr -> Adam -> recipe statistics, constraints and controllers -> dead-latent counters

What changes between steps is a device tensor updated in place, so the same function runs eagerly and is
captured whole in a CUDA graph (toysuper/capture.py); tests/test_fixed_shapes.py compiles the loss and the
bookkeeping with fullgraph=True on the CPU, the proof that neither has a data-dependent shape or host sync.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .recipes.base import LossOutput
from .state import TrainState

PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def autocast(device: torch.device, precision: str):
    """The forward pass's context: "bfloat16" autocasts matmuls to bf16 (weights, Adam moments and the loss
    stay float32; the sparse codes score their kept latents in float32). Its cache is off: a captured step
    must cast the weights on every replay."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def lr_multiplier(step: torch.Tensor, steps: int, warmup: float = 0.0, decay: float = 0.2) -> torch.Tensor:
    """min(1, (step + 1) / (warmup·steps + 1), (steps - step) / (decay·steps)), clamped at 0: a linear
    warm-up over the first `warmup` of training and a linear decay to 0 over the last `decay`."""
    rise = (step + 1) / (warmup * steps + 1)
    fall = (steps - step) / (decay * steps) if decay > 0 else torch.ones_like(rise)
    return torch.minimum(torch.minimum(rise, fall), torch.ones_like(rise)).clamp(min=0.0)


def clip_per_instance(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each instance's gradient (axis 0 of every parameter) to norm <= max_norm; returns the norms (inst,)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norms = sum(g.pow(2).reshape(g.shape[0], -1).sum(-1) for g in grads).sqrt()
    factor = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(factor.reshape(-1, *[1] * (g.ndim - 1)))
    return norms


def before_optimizer(sae, state: TrainState) -> None:
    """The recipe's constraints adjust the gradients (e.g. a unit-norm decoder's)."""
    for constraint in sae.recipe.constraints:
        constraint.before_optimizer_step(sae, state)


def bookkeeping(sae, state: TrainState, out: LossOutput) -> None:
    """After the optimiser: the recipe's statistics, constraints and controllers, the counters."""
    sae.recipe.after_optimizer_step(sae, state, out)
    for hook in (*sae.recipe.constraints, *sae.recipe.controllers):
        hook.after_optimizer_step(sae, state, out)
    state.samples_since_fired.add_(state.batch_size).masked_fill_(out.fired, 0.0)
    sae.samples_seen += state.batch_size
    state.step += 1


def sae_step(sae, state: TrainState, optimizer: torch.optim.Optimizer, lr: torch.Tensor, base_lr: float,
             schedule: dict, grad_clip: float | None, precision: str) -> Callable[[], dict[str, torch.Tensor]]:
    """The step as a function of no arguments, returning the logged terms, each (inst,): "loss", the recipe's
    terms, "l0", and "bad_inputs" (the batch's non-finite entries). It sets the optimiser's lr tensor to
    base_lr · lr_multiplier(step, **schedule)."""
    parameters = list(sae.parameters())

    def step() -> dict[str, torch.Tensor]:
        x = state.draw(state.batch_size)
        with autocast(sae.device, precision):
            out = sae.recipe.loss(sae, x, state)
        optimizer.zero_grad(set_to_none=True)
        out.loss.sum().backward()  # instances are independent: their losses simply add
        before_optimizer(sae, state)
        if grad_clip is not None:
            clip_per_instance(parameters, grad_clip)
        lr.copy_(base_lr * lr_multiplier(state.step, state.steps, **schedule))
        optimizer.step()
        with torch.no_grad():
            bookkeeping(sae, state, out)
        terms = {"loss": out.loss, **out.terms, "l0": out.l0}
        return {**{name: value.detach() for name, value in terms.items()}, "bad_inputs": (~torch.isfinite(x)).sum()}

    return step

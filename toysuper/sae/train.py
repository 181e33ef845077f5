"""Training SAEs: one batched loop for every recipe and every instance."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..checks import finite_tensor, non_negative, positive_int
from ..devices import make_generator
from ..progress import progress_bar
from ..sources import ActivationSource
from .model import SAE

LR_DECAY_FRACTION = 0.2  # the learning rate falls linearly to 0 over the last 20% of steps


@dataclass
class SAETrainResult:
    """What training leaves behind besides the trained weights."""

    history: pd.DataFrame
    """One row per (logged step, instance): step, instance and every loss term of the recipe."""
    dead_fraction: torch.Tensor
    """Per instance, fraction of latents that did not fire in the last `dead_window` samples, (inst,)."""


def lr_multiplier(step: int, steps: int) -> float:
    """Constant, then a linear decay to 0 over the last LR_DECAY_FRACTION of training."""
    decay_start = steps * (1 - LR_DECAY_FRACTION)
    if step < decay_start:
        return 1.0
    return max(0.0, (steps - step) / (steps - decay_start))


def train_sae(sae: SAE, source: ActivationSource, steps: int = 5_000, batch_size: int = 1024, lr: float = 1e-3,
              seed: int | None = 0, grad_clip: float | None = 1.0, log_every: int = 100,
              dead_window: int = 100_000, quiet: bool = False) -> SAETrainResult:
    """Train every instance of `sae` on fresh batches from `source` with Adam.

    Args:
        sae: the SAEs; sae.n_instances and sae.d_hidden must match the source.
        source: yields hidden activations (batch, inst, d_hidden).
        steps, batch_size, lr: optimisation length, samples per step, Adam learning rate.
        seed: seed of the data stream.
        grad_clip: clip each step's total gradient norm to this (None: no clipping).
        log_every: record the loss terms every this many steps.
        dead_window: a latent that has not fired in this many samples counts as dead.
        quiet: no progress bar.
    Raises ValueError on NaN activations or a NaN loss; weights then hold the last good state.
    """
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    lr = non_negative("lr", lr)
    if (source.n_instances, source.d_hidden) != (sae.n_instances, sae.d_hidden):
        raise ValueError(f"source gives (n_instances, d_hidden)=({source.n_instances}, {source.d_hidden}) "
                         f"but the SAE has ({sae.n_instances}, {sae.d_hidden})")
    generator = make_generator(seed, source.device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, steps))
    samples_since_fired = torch.zeros(sae.n_instances, sae.d_sae, device=sae.device)
    rows = []
    last_good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    for step in progress_bar(range(steps), desc=f"SAE {sae.recipe.name}", quiet=quiet):
        x = source.sample(batch_size, generator).hidden.to(sae.device)
        if step == 0:
            finite_tensor("hidden activations", x)
        terms = sae.recipe.loss(sae, x, step / steps)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].sum().backward()  # instances are independent: their losses simply add
        sae.recipe.before_optimizer_step(sae)
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            sae.recipe.after_optimizer_step(sae)
            samples_since_fired = torch.where(terms["fired"], 0.0, samples_since_fired + batch_size)
        if step % log_every == 0 or step == steps - 1:
            logged = {name: value.detach().cpu() for name, value in terms.items() if name != "fired"}
            if not torch.isfinite(logged["loss"]).all():
                sae.load_state_dict(last_good)
                raise ValueError(f"SAE loss became NaN/inf at step {step} (lr={lr}, "
                                 f"{sae.hyperparameter_values()}); weights restored to the last good check")
            last_good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
            dead = (samples_since_fired >= min(dead_window, (step + 1) * batch_size)).float().mean(-1).cpu()
            for instance in range(sae.n_instances):
                rows.append({"step": step, "instance": instance, "dead_fraction": dead[instance].item(),
                             **{name: value[instance].item() for name, value in logged.items()}})
    dead_fraction = (samples_since_fired >= min(dead_window, steps * batch_size)).float().mean(-1).cpu()
    return SAETrainResult(pd.DataFrame(rows), dead_fraction)

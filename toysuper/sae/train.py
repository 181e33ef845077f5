"""Training SAEs: one batched loop for every recipe and every instance (settings: TRAIN_DEFAULTS).

The step (sae/step.py) has fixed shapes and no host sync and is captured on CUDA (toysuper/capture.py); the
loop reads numbers back only every `log_every` steps and when it resamples.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pandas as pd
import torch

from ..capture import StepRunner, captures, check_capture, uncapturable_reason
from ..checks import finite_tensor, non_negative, positive_float, positive_int
from ..devices import instance_generators, instance_seeds
from ..progress import progress_bar
from ..sources import ActivationSource
from ..threads import with_threads
from .input_stats import b_dec_start, input_scale
from .model import SAE
from .snapshots import SNAPSHOT_SAMPLES, Snapshots
from .resampling import resample_dead_latents, resample_steps, resample_window
from .state import TrainState
from .step import check_precision, sae_step

FROM_RECIPE = "from recipe"

TRAIN_DEFAULTS = {
    "lr": 1e-3,              # Adam's learning rate and betas
    "betas": (0.9, 0.999),
    "grad_clip": 1.0,        # per-instance gradient-norm clip; None: no clipping
    "lr_warmup": 0.0,        # fraction of steps over which the lr rises linearly from ~0
    "lr_decay": 0.2,         # fraction of steps at the end over which it falls linearly to 0
    "b_dec_init": "zeros",   # "zeros" (the recipe's own init), "mean" or "geometric_median" of the (scaled)
                             # data; only for an SAE that has not been trained yet
    "resample": False,       # re-initialise dead latents at 10/20/30/40% of training (Towards Monosemanticity)
    "scale_inputs": True,    # multiply inputs by the recipe's per-instance scale while training, if it has one
    "dead_window": 100_000,  # samples without firing after which a latent counts as dead (AuxK, dead fraction)
}
INIT_SAMPLES = 16_384  # inputs used to estimate the input scale and b_dec's start


@dataclass
class SAETrainResult:
    """What training leaves behind besides the trained weights."""

    history: pd.DataFrame
    """One row per (logged step, instance): step, instance, lr, dead_fraction and every loss term."""
    dead_fraction: torch.Tensor
    """Per instance, fraction of latents that did not fire in the last `dead_window` samples, (inst,)."""
    input_scale: torch.Tensor | None = None
    """Per instance, the factor inputs were multiplied by in training (folded into the weights), or None."""
    resampled: int = 0
    """Dead latents re-initialised over the run, all instances together."""
    captured: bool = False
    """Whether the step ran from a CUDA graph (toysuper/capture.py)."""
    capture_failure: str | None = None
    """Why it did not where it would have: a failed capture's first error, or why the source cannot be."""
    snapshots: pd.DataFrame | None = None
    """With `snapshots=n`: the SAE graded at n evenly spaced steps (sae/snapshots.py), one row per (step, instance)."""


@with_threads
def train_sae(sae: SAE, source: ActivationSource, steps: int = 5_000, batch_size: int = 1024, lr=FROM_RECIPE,
              seed=0, grad_clip=FROM_RECIPE, log_every: int = 100, dead_window=FROM_RECIPE,
              quiet: bool = False, *, betas=FROM_RECIPE, lr_warmup=FROM_RECIPE, lr_decay=FROM_RECIPE,
              b_dec_init=FROM_RECIPE, resample=FROM_RECIPE, scale_inputs=FROM_RECIPE, precision: str = "float32",
              capture: str = "auto", tf32: bool = False, threads: int | None = None, snapshots: int = 0,
              snapshot_samples: int = SNAPSHOT_SAMPLES) -> SAETrainResult:
    """Train every instance of `sae` (n_instances and d_hidden as `source`'s) on fresh batches with Adam.

    Args:
        seed: the data streams' seeds, an int s (instance i reads the stream seeded s + i) or a list of ints;
            with the SAE's own seeds they also seed resampling.
        log_every: record the loss terms (and check them for NaN) every this many steps.
        lr, betas, grad_clip, lr_warmup, lr_decay, b_dec_init, resample, scale_inputs, dead_window: see
            TRAIN_DEFAULTS; each left at FROM_RECIPE takes the recipe's `train_defaults` value, else TRAIN_DEFAULTS'.
        precision: "float32", or "bfloat16" to autocast the forward pass (see sae/step.py).
        capture: "auto" captures the step in a CUDA graph on CUDA and replays it (toysuper/capture.py), "off"
            runs it eagerly. An uncapturable source or a failed capture trains eagerly with a warning
            (result.captured, result.capture_failure). Gradients are None afterwards (they were the graph's).
        tf32: on CUDA, the step's float32 matmuls may use TF32 (~1e-3 relative error per product).
        threads: torch's CPU threads during the call (threads.torch_threads: None keeps the caller's choice,
            else 1; 0: torch's setting; n: n).
        snapshots: grade the SAE at this many evenly spaced steps on `snapshot_samples` held-out samples; 0: none.

    Equal seeds give equal runs, and an instance trained alone (its SAE seed, its data seed) follows the same
    trajectory as in a batch. NaN activations or a NaN loss raise ValueError, the weights at the last good state.
    """
    settings = _settings(sae, source, steps, batch_size, log_every, precision, capture, tf32, dict(
        lr=lr, betas=betas, grad_clip=grad_clip, lr_warmup=lr_warmup, lr_decay=lr_decay, b_dec_init=b_dec_init,
        resample=resample, scale_inputs=scale_inputs, dead_window=dead_window))
    data_seeds = instance_seeds(seed, sae.n_instances)
    generator = instance_generators(data_seeds, source.device)  # one stream per instance
    scale = _init_and_scale(sae, source, generator, settings)
    state, run, lr_now = _step_runner(sae, source, generator, scale, steps, batch_size, settings, precision,
                                      capture, tf32)
    snaps = Snapshots(snapshots, steps, batch_size, source, snapshot_samples) if snapshots else None
    resample_at = resample_steps(steps) if settings["resample"] else set()
    phase_boundaries = sae.recipe.phase_boundaries(sae, steps)
    resampled, rows = 0, []
    last_good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    try:
        for step in progress_bar(range(steps), desc=f"SAE {sae.recipe.name}", quiet=quiet):
            state.phase = sum(step >= boundary for boundary in phase_boundaries)
            terms = run(phase=state.phase)
            if step in resample_at:  # between steps: resampling reads counts back to the host
                resampled += _resample(sae, state, step, data_seeds)
            if step % log_every == 0 or step == steps - 1:
                rows += _log(sae, state, terms, step, float(lr_now), last_good)
                last_good = {k: v.detach().clone() for k, v in sae.state_dict().items()}
            if snaps is not None:
                snaps.take(sae, step, scale)
    finally:
        run.close()  # capture: release the graphs' memory (gradients set to None)
        if scale is not None:  # the saved and returned SAE reads raw inputs
            sae.fold_input_scale(scale)
    dead_fraction = state.dead(min(state.dead_window, steps * batch_size)).float().mean(-1).cpu()
    _warn_if_diverged(history := pd.DataFrame(rows), settings["lr"])
    return SAETrainResult(history, dead_fraction, None if scale is None else scale.cpu(), resampled, run.captured,
                          run.failure, None if snaps is None else snaps.frame())


def _settings(sae: SAE, source, steps, batch_size, log_every, precision, capture, tf32, given: dict) -> dict:
    """The run's settings (given, else the recipe's, else TRAIN_DEFAULTS), every argument checked first."""
    if not isinstance(sae, SAE):
        raise TypeError(f"sae must be a toysuper SAE, got {type(sae).__name__}")
    missing = [name for name in ("sample", "n_instances", "d_hidden", "device") if not hasattr(source, name)]
    if missing:
        raise TypeError(f"source must be an activation source (sample(), n_instances, d_hidden, device: e.g. "
                        f"DictionarySource or ToyModelSource), got {type(source).__name__}"
                        + (f" of shape {tuple(source.shape)}" if isinstance(source, torch.Tensor) else "")
                        + f", which has no {', '.join(missing)}")
    positive_int("steps", steps)
    positive_int("batch_size", batch_size)
    check_precision(precision)
    check_capture(capture, tf32)
    positive_int("log_every", log_every)
    settings = {**TRAIN_DEFAULTS, **sae.recipe.train_defaults}
    settings.update({key: value for key, value in given.items() if value is not FROM_RECIPE})
    settings["dead_window"] = positive_int("dead_window", settings["dead_window"])
    settings["lr"] = positive_float("lr", settings["lr"])
    if settings["grad_clip"] is not None:
        non_negative("grad_clip", settings["grad_clip"])
    for key in ("lr_warmup", "lr_decay"):
        if not 0 <= non_negative(key, settings[key]) <= 1:
            raise ValueError(f"{key} must be a fraction of training in [0, 1], got {settings[key]!r}")
    if (source.n_instances, source.d_hidden) != (sae.n_instances, sae.d_hidden):
        raise ValueError(f"source gives (n_instances, d_hidden)=({source.n_instances}, {source.d_hidden}) "
                         f"but the SAE has ({sae.n_instances}, {sae.d_hidden})")
    return settings


def _init_and_scale(sae: SAE, source, generator, settings: dict) -> torch.Tensor | None:
    """Estimate the recipe's input scale (inst,) (None: none) and start b_dec, from INIT_SAMPLES inputs."""
    fresh = float(sae.samples_seen) == 0
    scaling = sae.recipe.input_scaling if settings["scale_inputs"] else None
    start_b_dec = fresh and settings["b_dec_init"] != "zeros"
    if scaling is None and not start_b_dec:
        return None
    x0 = finite_tensor("hidden activations", source.sample(INIT_SAMPLES, generator).hidden.to(sae.device))
    scale = None
    if scaling is not None:
        scale = input_scale(x0, scaling)
        x0 = x0 * scale[:, None]
        if not fresh:  # a trained SAE reads raw inputs: back to training units first
            sae.fold_input_scale(1.0 / scale)
    if start_b_dec:
        with torch.no_grad():
            sae.b_dec.copy_(b_dec_start(x0, settings["b_dec_init"]))
    return scale


def _step_runner(sae: SAE, source, generator, scale, steps: int, batch_size: int, settings: dict, precision: str,
                 capture: str, tf32: bool) -> tuple[TrainState, StepRunner, torch.Tensor]:
    """The run's state, its step (eager or captured) and the learning-rate tensor the schedule writes."""
    device = sae.device
    sample_hidden = getattr(source, "sample_hidden", None)  # sources that can skip building dense features

    def draw(n: int) -> torch.Tensor:
        hidden = (sample_hidden(n, generator) if sample_hidden else source.sample(n, generator).hidden).to(device)
        return hidden if scale is None else hidden * scale[:, None]

    not_capturable = uncapturable_reason(source, device)
    lr_now = torch.tensor(settings["lr"], device=device)  # the schedule writes it in place: a captured step reads it
    # fused: one pass over a parameter's moments (CPU and CUDA); capturable: Adam's step count on the device
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr_now, betas=tuple(settings["betas"]), fused=device.type in
                                 ("cpu", "cuda"), capturable=captures(capture, device) and not_capturable is None)
    state = TrainState(steps=steps, batch_size=batch_size, dead_window=settings["dead_window"], optimizer=optimizer,
                       draw=draw, step=torch.zeros((), device=device),
                       samples_since_fired=torch.zeros(sae.n_instances, sae.d_sae, device=device))
    schedule = {"warmup": settings["lr_warmup"], "decay": settings["lr_decay"]}
    step_fn = sae_step(sae, state, optimizer, lr_now, settings["lr"], schedule, settings["grad_clip"], precision)
    run = StepRunner(step_fn, device, capture, streams=[generator.counter], tf32=tf32, not_capturable=not_capturable,
                     reset_gradients=lambda: optimizer.zero_grad(set_to_none=True))
    return state, run, lr_now


def _resample(sae: SAE, state: TrainState, step: int, data_seeds: list) -> int:
    """Resample the latents silent for `resample_window` samples and restart their counters; returns how many."""
    dead = state.dead(resample_window(state.steps, state.batch_size))
    resampled = resample_dead_latents(sae, state, dead, step, data_seeds)
    state.samples_since_fired.masked_fill_(dead, 0.0)
    return resampled


def _log(sae: SAE, state: TrainState, terms: dict, step: int, lr: float, last_good: dict) -> list[dict]:
    """The logged rows of one step, one per instance; restores `last_good` and raises on NaN."""
    bad_inputs = int(terms["bad_inputs"])
    logged = {name: value.cpu() for name, value in terms.items() if value.shape == (sae.n_instances,)}
    if bad_inputs or not torch.isfinite(logged["loss"]).all():
        sae.load_state_dict(last_good)
        if bad_inputs:
            raise ValueError(f"hidden activations contains {bad_inputs} NaN or infinite value(s) (step {step}); "
                             f"weights restored to the last good check")
        raise ValueError(f"SAE loss became NaN/inf at step {step} (lr={lr}, {sae.hyperparameter_values()}); "
                         f"weights restored to the last good check")
    window = min(state.dead_window, (step + 1) * state.batch_size)
    dead = state.dead(window).float().mean(-1).cpu()
    return [{"step": step, "instance": instance, "lr": lr, "dead_fraction": dead[instance].item(),
             **{name: value[instance].item() for name, value in logged.items()}}
            for instance in range(sae.n_instances)]


DIVERGED = 10.0  # a reconstruction error that ends 10x above where it started: the lr is too large


def _warn_if_diverged(history: pd.DataFrame, lr: float) -> None:
    """Warn when an instance's reconstruction error ends far above its start (a divergence the NaN check misses)."""
    term = "mse" if "mse" in history else "loss"
    if history["step"].nunique() < 2:  # (never empty: the last step is always logged)
        return
    first, last = (history[history["step"] == history["step"].agg(end)].set_index("instance")[term]
                   for end in ("min", "max"))
    rose = last > DIVERGED * first.clip(lower=1e-12)
    if rose.any():
        worst = (last / first.clip(lower=1e-12))[rose].idxmax()
        warnings.warn(f"SAE training diverged in instance(s) {rose[rose].index.tolist()}: the {term} rose from "
                      f"{first[worst]:.3g} to {last[worst]:.3g} (instance {worst}) at lr={lr:g}; a smaller lr may "
                      f"train", RuntimeWarning, stacklevel=3)

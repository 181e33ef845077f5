"""What a recipe may know about the training run it is part of.

What changes from step to step lives in device tensors (the step count, the dead-latent counters), so
that a captured step replays with the current values; what is fixed for the run is plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class TrainState:
    """The trainer's view of a run, passed to every recipe hook; outside `train_sae` a recipe gets None
    (training finished, nothing dead)."""

    steps: int = 1  # total steps of this run
    batch_size: int = 1
    dead_window: int = 100_000  # a latent that has not fired in this many samples is dead
    step: torch.Tensor | None = None  # steps done so far, 0-d float32 on the SAE's device
    samples_since_fired: torch.Tensor | None = None  # per latent, (inst, d_sae)
    phase: int | None = None
    """How many of the recipe's `phase_boundaries` this step has reached, set by the loop on the host (a
    captured step is one graph per phase); None: unknown, which a recipe must handle on the device."""
    optimizer: torch.optim.Optimizer | None = None
    draw: Callable[[int], torch.Tensor] | None = None  # draw(n): n fresh inputs in training units

    def progress(self) -> torch.Tensor:
        """Fraction of training done, a 0-d tensor in [0, 1]."""
        return (self.step / max(1, self.steps)).clamp(max=1.0)

    def dead(self, window: int | None = None) -> torch.Tensor | None:
        """Bool (inst, d_sae): latents silent for at least `window` samples (default dead_window)."""
        if self.samples_since_fired is None:
            return None
        return self.samples_since_fired >= (self.dead_window if window is None else window)

"""What a recipe may know about the training run it is part of.

Everything that changes from step to step lives in device tensors (the step count, the dead-latent
counters), so that a captured step replays with the current values rather than those it was captured
with; what is fixed for the run (its length, the batch size) is plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class TrainState:
    """The trainer's view of a run, passed to every recipe hook.

    A recipe called outside `train_sae` (tests, notebooks) gets None: training finished, nothing dead.
    """

    steps: int = 1
    """Total steps of this run."""
    batch_size: int = 1
    dead_window: int = 100_000
    """A latent that has not fired in this many samples is dead."""
    step: torch.Tensor | None = None
    """Steps done so far, a 0-d float32 tensor on the SAE's device (0 at the first step)."""
    samples_since_fired: torch.Tensor | None = None
    """Per latent, training samples since it last fired, (inst, d_sae)."""
    phase: int | None = None
    """How many of the recipe's `phase_boundaries` this step has reached, a host int set by the training
    loop before each step (a captured step is one graph per phase); None: unknown, which every recipe
    must handle (it then decides per instance on the device)."""
    optimizer: torch.optim.Optimizer | None = None
    draw: Callable[[int], torch.Tensor] | None = None
    """draw(n): n fresh inputs in training units, (n, inst, d_hidden)."""
    extras: dict = field(default_factory=dict)

    def progress(self) -> torch.Tensor:
        """Fraction of training done, a 0-d tensor in [0, 1]."""
        return (self.step / max(1, self.steps)).clamp(max=1.0)

    def dead(self, window: int | None = None) -> torch.Tensor | None:
        """Bool (inst, d_sae): latents silent for at least `window` samples (default dead_window)."""
        if self.samples_since_fired is None:
            return None
        return self.samples_since_fired >= (self.dead_window if window is None else window)


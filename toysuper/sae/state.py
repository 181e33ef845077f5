"""What a recipe may know about the training run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass
class TrainState:
    """The trainer's view of a run, passed to every recipe hook.

    A recipe called outside `train_sae` (tests, notebooks) gets `TrainState()`: training
    finished, nothing dead.
    """

    step: int = 1
    """Steps done so far (0 at the first step)."""
    steps: int = 1
    """Total steps of this run."""
    batch_size: int = 1
    samples_since_fired: torch.Tensor | None = None
    """Per latent, training samples since it last fired, (inst, d_sae); None: all fired just now."""
    dead_window: int = 100_000
    """A latent that has not fired in this many samples is dead."""
    optimizer: torch.optim.Optimizer | None = None
    draw: Callable[[int], torch.Tensor] | None = None
    """draw(n): n fresh inputs in training units, (n, inst, d_hidden)."""
    seed: int = 0
    """The run's data seed; with the SAE's per-instance seeds it seeds training-time randomness."""
    extras: dict = field(default_factory=dict)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]."""
        return min(1.0, self.step / max(1, self.steps))

    def dead(self, window: int | None = None) -> torch.Tensor | None:
        """Bool (inst, d_sae): latents silent for at least `window` samples (default dead_window)."""
        if self.samples_since_fired is None:
            return None
        return self.samples_since_fired >= (self.dead_window if window is None else window)

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
    phase: int = 0
    """The phase of training this step is in (host-side): how many of the recipe's phase_boundaries(sae,
    steps) it has passed; set by the loop before each step, each phase has its own CUDA graph."""
    fixed_shapes: bool = True
    """Whether the step must keep shapes fixed by the configuration (captured, compiled, or on an
    accelerator). False only for an eager step on the CPU, where reading a count back is free and a few
    selections use it to skip work (sae/selection.py)."""
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


def fixed_shapes(state: TrainState | None, device: torch.device) -> bool:
    """Whether a step must keep its shapes fixed: as the state says, and outside training off the CPU."""
    return state.fixed_shapes if state is not None else device.type != "cpu"

"""SAELens's trainer on toysuper's ground truth: its `DataProvider` is an iterator of (batch, d_in) activation
batches, and `SAELensActivations` is one over a source instance, whose true features `evaluate` then knows
(README, "Grading an outside SAE", shows the whole run). Plain torch: SAELens is not imported.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..checks import positive_int
from ..devices import make_generator, resolve_device
from ..sources import ActivationSource


class SAELensActivations(Iterator[torch.Tensor]):
    """Endless batches (batch_size, d_hidden) of the hidden activations of one `instance` of `source`, drawn
    from `seed` (grading's held-out samples use another by default) and delivered on `device` (SAELens's
    trainer's; the source's by default)."""

    def __init__(self, source: ActivationSource, batch_size: int, instance: int = 0, seed: int | None = 0,
                 device=None):
        self.batch_size = positive_int("batch_size", batch_size)
        if isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance < source.n_instances:
            raise ValueError(f"instance must be an index below the source's n_instances={source.n_instances}, "
                             f"got {instance!r}")
        self.source, self.instance = source, instance
        self.device = source.device if device is None else resolve_device(device)
        self.generator = make_generator(seed, source.device)
        self.d_in = source.d_hidden

    @torch.no_grad()
    def __next__(self) -> torch.Tensor:
        hidden = self.source.sample(self.batch_size, self.generator).hidden[:, self.instance]
        return hidden.to(self.device).contiguous()

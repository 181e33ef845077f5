"""Recovery over training: the SAE graded at n evenly spaced steps (the last one included) on a small
held-out set. While training, a recipe that scales its inputs reads s·x (s folded into the weights only at
the end), so a snapshot encodes s·x and divides the reconstruction by s: it grades what training would save.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..checks import positive_int
from ..grade.evaluate import evaluate

SNAPSHOT_SAMPLES = 2_048
COLUMNS = ["step", "samples_seen", "instance", "recovered@0.9", "mmcs", "l0", "dead_fraction", "sb_mcc"]


class Snapshots:
    def __init__(self, n: int, steps: int, batch_size: int, source, n_samples: int = SNAPSHOT_SAMPLES):
        self.at = {max(0, round((i + 1) * steps / n) - 1) for i in range(positive_int("snapshots", n))}
        self.batch_size, self.source = batch_size, source
        self.n_samples = positive_int("snapshot_samples", n_samples)
        self.rows: list[pd.DataFrame] = []

    def take(self, sae, step: int, scale: torch.Tensor | None) -> None:
        """Grade `sae` if `step` is one of the chosen steps (called after every step)."""
        if step not in self.at:
            return
        s = torch.ones(sae.n_instances, device=sae.device) if scale is None else scale.to(sae.device)
        graded = (sae.decoder_directions(), lambda x: sae.encode(x * s[:, None]),
                  lambda acts: sae.decode(acts) / s[:, None])
        summary = evaluate(graded, self.source, n_samples=self.n_samples, quiet=True).summary
        summary.insert(0, "samples_seen", (step + 1) * self.batch_size)
        summary.insert(0, "step", step)
        self.rows.append(summary[COLUMNS])

    def frame(self) -> pd.DataFrame:
        """One row per (snapshot, instance), columns COLUMNS."""
        return pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=COLUMNS)

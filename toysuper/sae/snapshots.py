"""Recovery over training: the SAE graded at a few evenly spaced steps, on a small held-out set.

`train_sae(..., snapshots=n)` calls `Snapshots.take` after every step; it grades (and so reads numbers
back from the device) only at the n chosen steps, the last of them the final step. While training, a
recipe that scales its inputs reads x · s (s per instance, folded into the weights only at the end), so a
snapshot encodes s · x and divides the reconstruction by s: the SAE graded is the one training would
save at that step.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..checks import positive_int
from ..grade.evaluate import evaluate

SNAPSHOT_SAMPLES = 2_048
COLUMNS = ["step", "samples_seen", "instance", "recovered@0.9", "mmcs", "l0", "dead_fraction", "sb_mcc"]


def snapshot_steps(steps: int, n: int) -> list[int]:
    """n evenly spaced steps (0-based) ending at the last one, fewer if steps < n."""
    return sorted({max(0, round((i + 1) * steps / n) - 1) for i in range(n)})


class Snapshots:
    def __init__(self, n: int, steps: int, batch_size: int, source, n_samples: int = SNAPSHOT_SAMPLES):
        self.at = set(snapshot_steps(steps, positive_int("snapshots", n)))
        self.batch_size, self.source = batch_size, source
        self.n_samples = positive_int("snapshot_samples", n_samples)
        self.rows: list[pd.DataFrame] = []

    def take(self, sae, step: int, scale: torch.Tensor | None) -> None:
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

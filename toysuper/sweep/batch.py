"""An instance batch: grid points that train as the instances of one batched pass, and what it needs.

The planner makes batches, the runner trains them and the executors carry them (to a Ray
worker too), so `Batch` sits below all three.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

from . import config as config_io

BYTES = 4  # float32


@dataclass
class Batch:
    """Grid points that train as the instances of one batched pass."""

    points: list[dict]
    """Flat grid points (see config.expand), one result row each."""
    keys: list[str] = field(default_factory=list)
    """config.point_key of each point."""

    def __post_init__(self):
        if not self.keys:
            self.keys = [config_io.point_key(p) for p in self.points]

    @property
    def id(self) -> str:
        """A stable name for the batch, from its points' keys."""
        return hashlib.sha1(json.dumps(sorted(self.keys)).encode()).hexdigest()[:12]

    @functools.cached_property
    def train_keys(self) -> list[str]:
        """config.train_key of each point (points that differ only in grading share one SAE instance)."""
        return [config_io.train_key(p) for p in self.points]

    def trainings(self) -> list[list[int]]:
        """The points of each SAE instance: indices of points that share a train_key."""
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(self.train_keys):
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    @property
    def n_saes(self) -> int:
        return len(set(self.train_keys))

    @property
    def n_toy_models(self) -> int:
        if self.points[0]["source.kind"] != "toy_model":
            return 0
        return len({config_io.toy_key(p) for p in self.points})

    def estimate_mb(self) -> float:
        return estimate_mb(largest_grading(self.points), self.n_saes, self.n_toy_models)

    def samples(self) -> dict[str, int]:
        """Samples drawn to train the toy models, the SAEs, and to grade, summed over instances."""
        first = self.points[0]
        return {"toy_model": self.n_toy_models * first["source.steps"] * first["source.batch_size"],
                "sae": self.n_saes * first["sae.steps"] * first["sae.batch_size"],
                "evaluate": sum(p["evaluate.n_samples"] for p in self.points)}


def largest_grading(points: list[dict]) -> dict:
    return max(points, key=lambda p: p["evaluate.n_samples"])


def estimate_mb(point: dict, n_sae: int, n_toy: int) -> float:
    """Rough peak memory of one batched pass, MB: activations of a training step and the weights with Adam's state."""
    n, d, k = point["features.n_features"], point["source.d_hidden"], point["sae.d_sae"]
    sae_batch, toy_batch = point["sae.batch_size"], point["source.batch_size"]
    per_sae = sae_batch * (8 * k + 6 * d + 3 * n) + 4 * (2 * d * k + k + d)
    per_toy = toy_batch * (8 * n + 3 * d) + 4 * (n * d + n)
    grading = min(4096, point["evaluate.n_samples"]) * (4 * k + 12 * n + 2 * d)
    return BYTES * (n_sae * (per_sae + grading) + n_toy * per_toy) / 2**20

"""The standard recovery task, and recipes trained and graded side by side on it.

The task: `n_features` random unit directions in `d_hidden` dimensions, each feature firing with probability
8 / n_features with magnitude U[0, 1], and an SAE as wide as there are features; benchmarks/recipes.py reports
the full size, notebooks use smaller ones. A TaskSize may also change the mean L0, the frequencies (Zipf) or
the magnitude (benchmarks/recipe_robustness.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from ..sae.model import SAE
from ..sae.recipes import get_recipe
from ..sae.train import train_sae
from ..sources import DictionarySource
from ..truth.dictionaries import random_directions
from ..truth.distribution import FeatureDistribution
from ..truth.frequencies import Zipf
from ..truth.magnitudes import MAGNITUDES
from .evaluate import evaluate

MEAN_ACTIVE = 8
COLUMNS = ["recipe", "hyperparameters", "recovered@0.9", "mmcs", "hungarian_cos", "activation_mcc", "fvu", "l0",
           "dead_fraction", "wall_s"]


@dataclass(frozen=True)
class TaskSize:
    n_features: int
    d_hidden: int
    d_sae: int
    samples: int
    batch_size: int = 1024
    l0: float = MEAN_ACTIVE
    """Mean number of features firing per sample."""
    zipf_exponent: float = 0.0
    """0: every feature fires with probability l0 / n_features; > 0: Zipf(zipf_exponent, l0) frequencies."""
    magnitude: str = "uniform"
    """A key of truth.magnitudes.MAGNITUDES: "uniform" (U[0, 1]) or "constant" (1), at their defaults."""


STANDARD = TaskSize(n_features=1024, d_hidden=128, d_sae=1024, samples=2_000_000)


def task_source(size: TaskSize, n_instances: int = 1, seed: int = 0, device="cpu") -> DictionarySource:
    """The recovery task: one shared set of random unit directions, independent samples per instance."""
    directions = random_directions(size.n_features, size.d_hidden, seed=seed, device=device)[0]
    firing = Zipf(size.zipf_exponent, size.l0) if size.zipf_exponent > 0 else size.l0 / size.n_features
    dist = FeatureDistribution(size.n_features, firing, n_instances=n_instances,
                               magnitude=MAGNITUDES[size.magnitude](), device=device)
    return DictionarySource(directions, dist)


def sweep(recipe, factors=(1.0,)) -> list[dict[str, float]]:
    """Instances of `recipe` at its defaults with its `sparsity_knob` scaled by each factor (a whole-number
    knob such as k rounded, at least 1)."""
    found = get_recipe(recipe)
    knob, defaults = found.sparsity_knob, dict(found.hyperparameters)
    if knob is None:
        raise ValueError(f"recipe {found.name!r} declares no sparsity_knob to sweep")
    rows = []
    for factor in factors:
        value = defaults[knob] * factor
        whole = knob in found.integer_hyperparameters
        rows.append({**defaults, knob: max(1.0, float(round(value))) if whole else value})
    return rows


def describe(recipe, hyperparameters: dict[str, float]) -> str:
    """The knob and whatever differs from the recipe's defaults, as text."""
    found = get_recipe(recipe)
    shown = {k: v for k, v in hyperparameters.items() if k == found.sparsity_knob or v != found.hyperparameters[k]}
    return ", ".join(f"{k}={v:g}" for k, v in shown.items())


def run_recipe(recipe, instances: list[dict[str, float]], size: TaskSize = STANDARD, seed: int = 0,
               device="cpu", quiet: bool = True, n_eval: int = 20_000, **train_settings) -> pd.DataFrame:
    """Train one batched pass of `recipe` (one SAE per entry of `instances`) on the task and grade it: one row
    per instance with the columns of COLUMNS (wall_s: the pass's training time)."""
    source = task_source(size, len(instances), seed=seed, device=device)
    hyperparameters = {name: [row[name] for row in instances] for name in instances[0]}
    sae = SAE(size.d_hidden, size.d_sae, len(instances), recipe=recipe, seed=seed, device=device, **hyperparameters)
    start = time.perf_counter()
    train_sae(sae, source, steps=max(1, size.samples // size.batch_size), batch_size=size.batch_size,
              seed=seed + 1, quiet=quiet, **train_settings)
    wall = time.perf_counter() - start
    summary = evaluate(sae, source, n_samples=n_eval).summary
    summary.insert(0, "hyperparameters", [describe(recipe, row) for row in instances])
    summary.insert(0, "recipe", recipe if isinstance(recipe, str) else sae.recipe.name)
    summary["wall_s"] = wall
    return summary[COLUMNS]

"""Rows of the validation leaderboard: one (task, recipe) trained and graded, pure in its key, resumable.

A row's key is everything its numbers depend on (`row_key`). Each row is written to its own JSON file
atomically once done, so an interrupted run loses at most the row in flight and a rerun skips the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from ..devices import resolve_device
from ..grade.evaluate import evaluate
from ..sae.model import SAE
from ..sae.recipes import get_recipe
from ..sae.train import TRAIN_DEFAULTS, train_sae
from ..sweep.store import atomic_write
from .suite import SIZES, SNAPSHOTS, SUITE_VERSION, TASKS, Size

L0_TOLERANCE = 0.10  # a row whose L0 misses the task's target by more than this fraction is marked
METRICS = ["recovered@0.9", "mmcs", "sb_mcc", "sb_f1", "sb_explained_variance", "absorption", "parent_miss",
           "split_fraction", "dead_fraction", "l0"]
AT = ("matched", "defaults")


def matched_sparsity(recipe, l0: float) -> dict[str, float]:
    """The hyperparameters that make `recipe` run at mean L0 `l0`: k for the TopK family, else the target-L0
    controller (recipes/target_l0.py) on the recipe's coefficient."""
    if recipe.sparsity_knob == "k":
        return {"k": float(max(1, round(l0)))}
    if "target_l0" in recipe.hyperparameters:
        return {"target_l0": float(l0)}
    raise ValueError(f"recipe {recipe.name!r} has neither k nor target_l0, so it cannot run at a task's L0; "
                     f"validate it at its own sparsity (--at defaults, or at='defaults'), or give it target_l0 and "
                     f"the TargetL0 controller (docs/adding_a_recipe.md)")


def l0_missed(l0: float, target: float) -> bool:
    """Whether an L0 misses its target by more than L0_TOLERANCE (never, without a target)."""
    return bool(target == target and abs(l0 - target) > L0_TOLERANCE * target)


def split_settings(recipe_spec: str, settings: dict) -> tuple[dict, dict]:
    """`settings` as (the recipe's hyperparameters, train_sae settings); ValueError naming an unknown key."""
    recipe = get_recipe(recipe_spec)
    unknown = sorted(set(settings) - set(recipe.hyperparameters) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"settings {unknown} are neither hyperparameters of {recipe_spec!r} "
                         f"({sorted(recipe.hyperparameters)}) nor train_sae settings ({sorted(TRAIN_DEFAULTS)})")
    return ({k: v for k, v in settings.items() if k in recipe.hyperparameters},
            {k: v for k, v in settings.items() if k not in recipe.hyperparameters})


def size_of(suite) -> tuple[str, Size]:
    """(the size's name in keys, the Size) from a size name or a Size."""
    if isinstance(suite, Size):
        return json.dumps(asdict(suite)), suite
    if suite not in SIZES:
        raise ValueError(f"suite must be one of {list(SIZES)} or a Size, got {suite!r}")
    return suite, SIZES[suite]


def row_key(task: str, recipe: str, settings: dict, suite, at: str, device) -> dict:
    return {"suite_version": SUITE_VERSION, "size": size_of(suite)[0], "task": task, "recipe": recipe,
            "settings": json.dumps(settings, sort_keys=True), "at": at, "device": resolve_device(device).type}


def label(recipe: str, settings: dict) -> str:
    """The recipe as the leaderboard names it: its spec, and the settings given, if any."""
    return recipe + ("[" + ",".join(f"{k}={v}" for k, v in sorted(settings.items())) + "]" if settings else "")


def row_path(folder: Path, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in key["recipe"])
    return Path(folder) / "rows" / f"{key['task']}__{name}__{digest}.json"


def train_row(key: dict, device) -> tuple[dict, pd.DataFrame]:
    """Train and grade one row: (its leaderboard entry, its snapshots over training)."""
    size = SIZES[key["size"]] if key["size"] in SIZES else Size(**json.loads(key["size"]))
    settings = json.loads(key["settings"])
    hyperparameters, train_settings = split_settings(key["recipe"], settings)
    setup = TASKS[key["task"]].build(size, resolve_device(device))
    recipe = get_recipe(key["recipe"])
    if key["at"] == "matched":
        hyperparameters.update(matched_sparsity(recipe, setup.l0))
    torch.manual_seed(0)  # nothing should draw from the global generator; if a recipe does, it is seeded too
    sae = SAE(setup.source.d_hidden, setup.d_sae, 1, recipe=key["recipe"], seed=0, device=device, **hyperparameters)
    start = time.perf_counter()
    result = train_sae(sae, setup.source, steps=max(1, setup.samples // setup.batch_size),
                       batch_size=setup.batch_size, seed=1, quiet=True, snapshots=SNAPSHOTS,
                       snapshot_samples=size.snapshot_eval, **train_settings)
    wall = time.perf_counter() - start
    report = evaluate(sae, setup.source, n_samples=size.n_eval, quiet=True)
    summary = report.summary.iloc[0]
    target = setup.l0 if key["at"] == "matched" else math.nan
    row = {**key, "label": label(key["recipe"], settings),
           **{m: float(summary[m]) for m in METRICS if m in summary},
           "parent_miss": float(report.features["parent_miss"].mean()),
           "target_l0": target, "wall_s": wall}
    row["l0_missed"] = l0_missed(row["l0"], target)
    return row, result.snapshots.assign(task=key["task"], label=row["label"])


def run_row(folder: Path, key: dict, device) -> tuple[dict, pd.DataFrame]:
    """The row of `key` from `folder` if it ran already, else trained now and written there atomically."""
    path = row_path(folder, key)
    if path.is_file():
        data = json.loads(path.read_text())
        return data["row"], pd.DataFrame(data["snapshots"])
    row, snapshots = train_row(key, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"row": row, "snapshots": snapshots.to_dict("records")}, indent=1))
    return row, snapshots

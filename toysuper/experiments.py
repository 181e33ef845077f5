"""Running an experiment: grid -> batched passes -> graded rows -> results.csv and a figure.

Grid points that differ only along instance axes (sparsity, λ) train together: one toy
model per distinct sparsity, one SAE instance per point, all in one batched pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from . import checks, config as config_io
from .devices import resolve_device
from .evaluate import evaluate
from .features import FeatureDistribution
from .sae import SAE, get_recipe, train_sae
from .sources import DictionarySource, ToyModelSource, random_directions
from .toy_models import KINDS, ToyModel, train_toy_model

SOURCE_KINDS = ("toy_model", "dictionary")


@dataclass
class Group:
    """Grid points that train as the instances of one batched pass."""

    key: tuple
    points: list[dict]


def check_point(point: dict) -> None:
    """Reject a grid point that cannot train, naming the key, before anything trains."""
    for key in ("features.n_features", "source.d_hidden", "source.steps", "source.batch_size", "sae.d_sae",
                "sae.steps", "sae.batch_size", "evaluate.n_samples"):
        checks.positive_int(key, point[key])
    for key in ("source.lr", "sae.lr", "sae.l1_coefficient", "source.noise"):
        checks.non_negative(key, point[key])
    for key in ("features.sparsity",):
        if not 0 <= checks.finite_float(key, point[key]) <= 1:
            raise ValueError(f"{key} must lie in [0, 1], got {point[key]!r}")
    if not 0 < checks.finite_float("features.importance_decay", point["features.importance_decay"]) <= 1:
        raise ValueError(f"features.importance_decay must lie in (0, 1], got {point['features.importance_decay']!r}")
    if point["source.kind"] not in SOURCE_KINDS:
        raise ValueError(f"source.kind must be one of {SOURCE_KINDS}, got {point['source.kind']!r}")
    if point["source.toy_model"] not in KINDS:
        raise ValueError(f"source.toy_model must be one of {KINDS}, got {point['source.toy_model']!r}")
    get_recipe(point["sae.recipe"])


def plan(config: dict) -> list[Group]:
    """Validate every grid point and pack them into batched groups."""
    points = config_io.expand(config)
    for point in points:
        check_point(point)
    groups: dict[tuple, Group] = {}
    for point in points:
        key = tuple((k, v) for k, v in point.items() if k not in config_io.INSTANCE_AXES)
        groups.setdefault(key, Group(key, [])).points.append(point)
    return list(groups.values())


def run_group(group: Group, device: torch.device, quiet: bool = False) -> pd.DataFrame:
    """Train and grade one group; one row per grid point."""
    first = group.points[0]
    seed = int(first["seed"])
    n_features, d_hidden = first["features.n_features"], first["source.d_hidden"]
    importance = first["features.importance_decay"] ** torch.arange(n_features, dtype=torch.float32)
    sparsities = [p["features.sparsity"] for p in group.points]
    extra_columns = [{} for _ in group.points]
    if first["source.kind"] == "toy_model":
        distinct = sorted(set(sparsities))
        dist = FeatureDistribution.sparsity_sweep(n_features, distinct, importance=importance, device=device)
        model = ToyModel(n_features, d_hidden, len(distinct), kind=first["source.toy_model"], seed=seed,
                         device=device)
        train_toy_model(model, dist, steps=first["source.steps"], batch_size=first["source.batch_size"],
                        lr=first["source.lr"], seed=seed, quiet=quiet)
        instances = [distinct.index(s) for s in sparsities]
        source = ToyModelSource(model, dist, instances=instances)
        n_represented = model.represented().sum(-1).tolist()
        dims = model.dimensions_per_feature().tolist()
        for columns, instance in zip(extra_columns, instances):
            columns.update(n_represented=n_represented[instance], dims_per_feature=dims[instance])
    else:
        dist = FeatureDistribution.sparsity_sweep(n_features, sparsities, importance=importance, device=device)
        directions = random_directions(n_features, d_hidden, seed=seed, device=device)[0]
        source = DictionarySource(directions, dist, noise=first["source.noise"])
    sae = SAE(d_hidden, first["sae.d_sae"], len(group.points), recipe=first["sae.recipe"], seed=seed, device=device,
              l1_coefficient=[p["sae.l1_coefficient"] for p in group.points])
    train_sae(sae, source, steps=first["sae.steps"], batch_size=first["sae.batch_size"], lr=first["sae.lr"],
              seed=seed + 1, quiet=quiet)
    report = evaluate(sae, source, n_samples=first["evaluate.n_samples"], threshold=first["evaluate.threshold"])
    rows = []
    for point, columns, summary in zip(group.points, extra_columns, report.summary.to_dict("records")):
        summary.pop("instance")
        rows.append({**point, **columns, **summary})
    return pd.DataFrame(rows)


def default_run_dir(config: dict) -> Path:
    return Path("runs") / f"{config['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(config: dict, out_dir=None, device=None, quiet: bool = False) -> tuple[pd.DataFrame, Path]:
    """Run every group of `config`, appending to `out_dir/results.csv` as each finishes.

    Writes the resolved config (config.toml) first and a figure (recovery.png) last.
    Returns the results table and the run folder.
    """
    from .plots import recovery_figure  # matplotlib is only needed once there is something to draw

    device = resolve_device(device if device is not None else config["device"])
    groups = plan(config)
    out_dir = Path(out_dir) if out_dir is not None else default_run_dir(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.toml").write_text(config_io.to_toml(config))
    results_path = out_dir / "results.csv"
    results_path.unlink(missing_ok=True)
    tables = []
    for group in groups:
        table = run_group(group, device, quiet=quiet)
        table.to_csv(results_path, mode="a", header=not results_path.exists(), index=False)
        tables.append(table)
    results = pd.concat(tables, ignore_index=True)
    recovery_figure(results, config_io.axes(config), threshold=config["evaluate"]["threshold"]).savefig(
        out_dir / "recovery.png", dpi=120, bbox_inches="tight")
    return results, out_dir

"""Packing a sweep's grid points into instance batches (`Batch`): configurations that train in one pass.

Grid points whose shape-deciding keys agree (n_features, d_hidden, d_sae, recipe, steps, ...)
may train together: each distinct training (points that differ only in [evaluate] share one)
becomes one SAE instance and each distinct toy model one toy-model instance. A group larger
than run.memory_mb or run.max_instances is cut into several batches, keeping points that share
a toy model together where it can and points that share an SAE always. Every random stream of
a point comes from its own configuration (config.stream_seed), so its row is the same in any batch.
"""

from __future__ import annotations

from collections import Counter

from ..progress import progress_bar
from . import config as config_io
from .assemble import check_point
from .batch import Batch, estimate_mb, largest_grading


def group_key(point: dict) -> tuple:
    """What must agree for two points to train in one pass: every identity key that is neither an instance
    axis nor a grading key (a recipe's option, a string or bool, is per SAE: not an instance axis)."""
    return tuple((k, v) for k, v in sorted(point.items())
                 if config_io.is_identity(k) and not k.startswith(config_io.GRADING)
                 and not (config_io.is_instance_axis(k) and not isinstance(v, (bool, str))))


def _split(points: list[dict], memory_mb: float, max_instances: int) -> list[list[dict]]:
    """Cut one group into chunks within the budget: the points of one SAE never apart, toy-model siblings adjacent."""
    toy_model = points[0]["source.kind"] == "toy_model"
    trainings: dict[str, list[dict]] = {}
    for point in points:
        trainings.setdefault(config_io.train_key(point), []).append(point)
    units = sorted(trainings.values(), key=lambda unit: config_io.toy_key(unit[0]) if toy_model else "")
    chunks, current, toys, n_saes = [], [], set(), 0
    for unit in units:
        toy = {config_io.toy_key(unit[0])} if toy_model else set()
        over_count = max_instances and n_saes + 1 > max_instances
        over_memory = estimate_mb(largest_grading(current + unit), n_saes + 1, len(toys | toy)) > memory_mb
        if current and (over_count or over_memory):
            chunks.append(current)
            current, toys, n_saes = [], set(), 0
        current += unit
        toys |= toy
        n_saes += 1
    chunks.append(current)
    return chunks


def available_mb(device) -> float | None:
    """Memory the device can give now, MB; None where unknown or for a CUDA device this machine does not have."""
    import torch

    from ..memory import available_bytes

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        return None
    available = available_bytes(device)
    return None if available is None else available / 2**20


SIZE_KEYS = ("features.n_features", "source.d_hidden", "sae.d_sae", "sae.batch_size", "source.batch_size",
             "evaluate.n_samples")


def check_fits(point: dict, memory_mb: float, free: float | None, device) -> None:
    """Refuse a configuration that alone (a batch cannot be smaller) needs more than run.memory_mb or the device."""
    need = estimate_mb(point, 1, int(point["source.kind"] == "toy_model"))
    if need > memory_mb or (free is not None and need > free):
        limit = f"run.memory_mb={memory_mb:g}" if need > memory_mb else f"the {free:.0f} MB free on {device}"
        sizes = ", ".join(f"{k}={point[k]!r}" for k in SIZE_KEYS)
        advice = " or raise run.memory_mb" if need > memory_mb and (free is None or need <= free) else ""
        raise ValueError(f"one configuration ({sizes}) needs about {need:,.0f} MB (weights, optimiser state, a "
                         f"batch, grading), more than {limit}, and a configuration cannot be split further: make it "
                         f"smaller{advice}")


PROGRESS_AT = 5_000  # a grid this large is checked under a progress bar


def plan(config: dict, done: set[str] = frozenset(), device=None) -> list[Batch]:
    """Validate every grid point, then pack the points not in `done` (their keys) into batches.

    Raises ValueError naming the key of the first point that cannot train or does not fit in memory
    (run.memory_mb, and what `device`, default the config's, can give).
    """
    memory_mb, max_instances = config["run"]["memory_mb"], config["run"]["max_instances"]
    device = config["device"] if device is None else device
    free = available_mb(device)
    points = config_io.expand(config)
    for point in progress_bar(points, desc="checking configurations", quiet=len(points) < PROGRESS_AT):
        check_fits(point, memory_mb, free, device)
        check_point(point)
    groups: dict[tuple, list[dict]] = {}
    keys: dict[int, str] = {}
    seen = set(done)
    for point in points:
        key = config_io.point_key(point)
        if key in seen:  # done, or the same configuration twice (e.g. 0.5 and 1/2): train it once
            continue
        seen.add(key)
        keys[id(point)] = key
        groups.setdefault(group_key(point), []).append(point)
    return [Batch(chunk, [keys[id(p)] for p in chunk]) for group in groups.values()
            for chunk in _split(group, memory_mb, max_instances)]


def describe(config: dict, batches: list[Batch], n_done: int = 0) -> str:
    """The plan as text: what `toysuper run --dry-run` prints."""
    sweep = config_io.axes(config)
    n_points = sum(len(b.points) for b in batches) + n_done
    lines = [f"experiment {config['name']!r}: {n_points} configurations"
             + (f" ({n_done} already done)" if n_done else "")]
    if config.get("description"):
        lines.append(f"  {config['description']}")
    if sweep:
        lines.append("axes: " + ", ".join(f"{k} x{len(v)}" for k, v in sweep.items()))
    n_instances = sum(b.n_saes for b in batches)
    n_rows = sum(len(b.points) for b in batches)
    n_toys = sum(b.n_toy_models for b in batches)
    graded = f" (graded {n_rows} ways)" if n_rows != n_instances else ""
    lines.append(f"plan: {len(batches)} batches, {n_instances} SAE instances{graded}, {n_toys} toy-model instances "
                 f"(memory budget {config['run']['memory_mb']} MB, at most {config['run']['max_instances'] or 'any'} "
                 f"instances a batch)")
    varying = [k for k, _ in group_key(batches[0].points[0])] if batches else []
    varying = [k for k in varying if len({str(b.points[0].get(k)) for b in batches}) > 1]
    header = ["batch", *[k.split(".")[-1] for k in varying], "SAEs", "toys", "est MB", "samples"]
    rows, totals = [], Counter()
    for batch in batches:
        samples = batch.samples()
        totals.update(samples)
        rows.append([batch.id, *[str(batch.points[0].get(k, "-")) for k in varying], str(batch.n_saes),
                     str(batch.n_toy_models), f"{batch.estimate_mb():.0f}", f"{sum(samples.values()):.3g}"])
    if rows:
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        lines.append("  " + "  ".join(h.rjust(w) for h, w in zip(header, widths)))
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append(f"estimated samples: toy models {totals['toy_model']:.3g}, SAEs {totals['sae']:.3g}, "
                 f"grading {totals['evaluate']:.3g}")
    return "\n".join(lines)

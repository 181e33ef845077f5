"""Training and grading one instance batch: its points -> result rows (and, if asked, the models).

A batch is seeded from its content (`Batch.seed`), so the same batch gives the same rows in
this process, in a Ray worker, or on a rerun after an interruption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from . import assemble
from . import config as config_io
from ..toy import superposition
from ..grade.evaluate import evaluate
from .planner import Batch
from ..sae import SAE, train_sae
from ..toy.model import ToyModel
from ..toy.train import train_toy_model


@dataclass
class BatchResult:
    """What one batch leaves behind."""

    batch_id: str
    rows: pd.DataFrame
    """One row per point: key, batch, instance, the point's keys, toy-model columns, the report's summary."""
    features: pd.DataFrame
    """One row per (point, true feature): key, feature, firing_prob, importance, toy-model norms and the
    report's per-feature columns."""
    seconds: float
    """Wall time of the batch."""
    sae: SAE | None = None
    """The trained SAEs (on the CPU), when models are kept."""
    toy_model: ToyModel | None = None
    """The trained toy models (on the CPU), when models are kept and the source is a toy model."""
    toy_instance: list[int] | None = None
    """Toy-model instance of each SAE instance."""


def _toy_model_source(points: list[dict], seed: int, device, quiet: bool):
    """Train one toy-model instance per distinct feature setting of the batch; the source maps SAE
    instances onto them. Returns (source, toy instance per point, row columns, per-feature columns)."""
    identities = list(dict.fromkeys(assemble.toy_identity(p) for p in points))  # distinct, in order
    toy_points = [next(p for p in points if assemble.toy_identity(p) == ident) for ident in identities]
    first = points[0]
    dist = assemble.distribution(toy_points, device)
    model = assemble.toy_model(toy_points, seed, device)
    trained = train_toy_model(model, dist, steps=first["source.steps"], batch_size=first["source.batch_size"],
                              lr=first["source.lr"], seed=seed + 1, quiet=quiet)
    toy_instance = [identities.index(assemble.toy_identity(p)) for p in points]
    W = model.W.detach()
    represented, dims = model.represented().sum(-1).tolist(), model.dimensions_per_feature().tolist()
    norms, interference = superposition.feature_norms(W).cpu(), superposition.interference(W).cpu()
    dimensionality, final_loss = superposition.feature_dimensionality(W).cpu(), trained.final_loss.tolist()
    columns = [{"toy_instance": t, "n_represented": represented[t], "dims_per_feature": dims[t],
                "toy_loss": final_loss[t]} for t in toy_instance]
    per_feature = [{"norm": norms[t].tolist(), "interference": interference[t].tolist(),
                    "dimensionality": dimensionality[t].tolist()} for t in toy_instance]
    return assemble.toy_model_source(model, dist, toy_instance, first), toy_instance, columns, per_feature


def run_batch(batch: Batch, device, quiet: bool = False, keep_models: bool = False) -> BatchResult:
    """Train the toy models (if any) and SAEs of one batch, grade them, and return the rows."""
    start = time.perf_counter()
    points, seed = batch.points, batch.seed
    first = points[0]
    if first["source.kind"] == "toy_model":
        source, toy_instance, point_columns, feature_columns = _toy_model_source(points, seed, device, quiet)
        source_instance = toy_instance
    else:
        source, toy_instance = assemble.dictionary_source(points, device), None
        point_columns, feature_columns = [{} for _ in points], [{} for _ in points]
        source_instance = list(range(len(points)))
    sae = assemble.sae(points, seed + 2, device)
    train_sae(sae, source, seed=seed + 3, quiet=quiet, **assemble.sae_train_settings(first))
    report = evaluate(sae, source, n_samples=first["evaluate.n_samples"], threshold=first["evaluate.threshold"],
                      quiet=quiet)

    firing, weight = source.dist.firing_prob.cpu(), source.dist.importance.cpu()
    rows, feature_tables = [], []
    summaries = report.summary.to_dict("records")
    for instance, (point, key) in enumerate(zip(points, batch.keys)):
        summary = {k: v for k, v in summaries[instance].items() if k != "instance"}
        rows.append({"key": key, "batch": batch.id, "instance": instance, **config_io.identity(point),
                     **point_columns[instance], **summary})
        table = report.features[report.features["instance"] == instance].drop(columns=["instance"])
        table = table.reset_index(drop=True)
        s = source_instance[instance]
        extra = {"firing_prob": firing[s].tolist(), "importance": weight[s].tolist(), **feature_columns[instance]}
        extra = {name: values for name, values in extra.items() if name not in table}  # the report's own win
        table = pd.concat([pd.DataFrame({"key": key}, index=table.index), table,
                           pd.DataFrame(extra, index=table.index)], axis=1)
        feature_tables.append(table)
    kept = {}
    if keep_models:
        kept = {"sae": sae.to("cpu"), "toy_model": source.model.to("cpu") if toy_instance is not None else None,
                "toy_instance": toy_instance}
    return BatchResult(batch.id, pd.DataFrame(rows), pd.concat(feature_tables, ignore_index=True),
                       time.perf_counter() - start, **kept)

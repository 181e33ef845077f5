"""Training and grading one instance batch: its points -> result rows (and, if asked, the models).

Every random stream of a point comes from its own configuration (`config.stream_seed`), and
every API below draws each instance from its own stream, so a point's row is the same
whichever points share its batch: in this process, in a Ray worker, alone or among 32.

A failure spoils only its own rows: when the batched pass raises (a NaN loss, say), each
training runs again alone, and one that still fails becomes a row with status "failed" and
its reason, while the others keep their results (the same numbers, from the same streams).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch

from . import assemble
from . import config as config_io
from ..toy import superposition
from ..grade.evaluate import evaluate
from .batch import Batch
from ..sae import SAE, train_sae
from ..toy.model import ToyModel
from ..toy.train import train_toy_model
from .store import FAILED, OK

DIVERGED_FVU = 100.0
"""An SAE that reconstructs its data 100 times worse than their mean does has diverged (a learning rate too
large, typically): its row is failed rather than averaged into figures. Healthy SAEs sit below 1."""


@dataclass
class BatchResult:
    """What one batch leaves behind."""

    batch_id: str
    rows: pd.DataFrame
    """One row per point: key, batch, instance, the point's keys, status ("ok" or "failed"), error (the
    reason of a failure, else empty), toy-model columns, the report's summary."""
    features: pd.DataFrame
    """One row per (finished point, true feature): key, feature, firing_prob, importance, toy-model norms
    and the report's per-feature columns."""
    seconds: float
    sae: SAE | None = None
    """The trained SAEs (on the CPU), when models are kept: instance i is the row with `instance` i."""
    toy_model: ToyModel | None = None
    """The trained toy models (on the CPU), when models are kept and the source is a toy model."""


class _Outcome(NamedTuple):
    rows: list[dict]  # per point: status, instance, toy-model columns, summary (no key or config columns yet)
    features: list[pd.DataFrame | None]
    sae: SAE | None
    toy_model: ToyModel | None


def _train_toy_models(points: list[dict], device, quiet: bool):
    """One toy-model instance per distinct toy model of `points` (one point per SAE instance).

    Returns (model, toy instance per point, row columns per point, per-feature columns per point).
    """
    toy_points, toy_instance = assemble.distinct_toy_models(points)
    first = points[0]
    model = assemble.toy_model(toy_points, device)
    trained = train_toy_model(model, assemble.distribution(toy_points, device), steps=first["source.steps"],
                              batch_size=first["source.batch_size"], lr=first["source.lr"],
                              seed=[config_io.stream_seed(p, "toy_data") for p in toy_points], quiet=quiet)
    W = model.W.detach()
    represented, dims = model.represented().sum(-1).tolist(), model.dimensions_per_feature().tolist()
    norms, interference = superposition.feature_norms(W).cpu(), superposition.interference(W).cpu()
    dimensionality, final_loss = superposition.feature_dimensionality(W).cpu(), trained.final_loss.tolist()
    columns = [{"toy_instance": t, "n_represented": represented[t], "dims_per_feature": dims[t],
                "toy_loss": final_loss[t]} for t in toy_instance]
    per_feature = [{"norm": norms[t].tolist(), "interference": interference[t].tolist(),
                    "dimensionality": dimensionality[t].tolist()} for t in toy_instance]
    return model, toy_instance, columns, per_feature


def _train_and_grade(trainings: list[list[dict]], device, quiet: bool) -> _Outcome:
    """Train one SAE instance per training (on its toy model, if any), then grade it once per grading
    setting of its points. Raises whatever training or grading raises."""
    sae_points = [points[0] for points in trainings]
    first = sae_points[0]
    model = None
    if first["source.kind"] == "toy_model":
        model, toy_instance, point_columns, feature_columns = _train_toy_models(sae_points, device, quiet)
        source = assemble.toy_model_source(model, toy_instance, sae_points, device)
    else:
        source = assemble.dictionary_source(sae_points, device)
        point_columns, feature_columns = [{} for _ in sae_points], [{} for _ in sae_points]
    sae = assemble.sae(sae_points, device)
    trained = train_sae(sae, source, seed=[config_io.stream_seed(p, "sae_data") for p in sae_points], quiet=quiet,
                        **assemble.sae_train_settings(first))
    if trained.snapshots is not None:  # recovery over training: one JSON list per instance, in its rows
        for t, columns in enumerate(point_columns):
            columns["snapshots"] = trained.snapshots[trained.snapshots["instance"] == t].drop(
                columns="instance").to_json(orient="records")

    firing, weight = source.dist.firing_prob.cpu(), source.dist.importance.cpu()
    eval_seeds = [config_io.stream_seed(p, "evaluate") for p in sae_points]
    reports, rows, features = {}, [], []  # each grading setting graded once, over all instances
    for t, points in enumerate(trainings):
        for point in points:
            setting = (point["evaluate.n_samples"], point["evaluate.threshold"])
            if setting not in reports:
                report = evaluate(sae, source, n_samples=setting[0], threshold=setting[1], seed=eval_seeds, quiet=quiet)
                reports[setting] = report, report.summary.to_dict("records")
            report, summaries = reports[setting]
            summary = {k: v for k, v in summaries[t].items() if k != "instance"}
            rows.append({"instance": t, "status": OK, "error": "", **point_columns[t], **summary})
            if not summary["fvu"] <= DIVERGED_FVU:  # NaN too
                rows[-1].update(status=FAILED, error=f"diverged: the trained SAE's reconstruction error is "
                                f"{summary['fvu']:.3g} times the data's variance (FVU; mse {summary['mse']:.3g}); "
                                f"a smaller sae.lr may train")
            table = report.features[report.features["instance"] == t].drop(columns=["instance"]).reset_index(drop=True)
            extra = {"firing_prob": firing[t].tolist(), "importance": weight[t].tolist(), **feature_columns[t]}
            features.append(table.assign(**{k: v for k, v in extra.items() if k not in table}))  # the report's own win
    return _Outcome(rows, features, sae, model)


def _failed(trainings: list[list[dict]], error: BaseException) -> _Outcome:
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:2000]  # one line in the CSV and the listing
    rows = [{"instance": -1, "status": FAILED, "error": reason} for points in trainings for _ in points]
    return _Outcome(rows, [None] * len(rows), None, None)


def _one_at_a_time(trainings: list[list[dict]], device, quiet: bool) -> _Outcome:
    """Each training alone: those that fail become failed rows, the others' models are stacked back into one."""
    rows, features, saes, toys = [], [], [], []
    for points in trainings:
        try:
            outcome = _train_and_grade([points], device, quiet)
        except Exception as error:  # noqa: BLE001 - any failure of one configuration is its own row
            outcome = _failed([points], error)
        if outcome.sae is not None:  # renumbered: its instance in the stacked models
            rows += [{**row, "instance": len(saes), **({"toy_instance": len(saes)} if "toy_instance" in row else {})}
                     for row in outcome.rows]
            saes.append(outcome.sae)
            if outcome.toy_model is not None:
                toys.append(outcome.toy_model)
        else:
            rows += outcome.rows
        features += outcome.features
    return _Outcome(rows, features, _stack(saes) if saes else None, _stack(toys) if toys else None)


def _stack(models: list):
    """Models of one kind and shape, their instances stacked into one model (instance order kept)."""
    if len(models) == 1:
        return models[0]
    first = models[0]
    if isinstance(first, SAE):
        seeds = [s for m in models for s in m.seeds]
        hyper = {name: [v for m in models for v in m.hyperparameter_values()[name]]
                 for name in first.recipe.hyperparameters}
        stacked = SAE(first.d_hidden, first.d_sae, len(seeds), recipe=first.recipe, seed=seeds,
                      device=first.device, **hyper, **first.options)
    else:
        stacked = ToyModel(first.n_features, first.d_hidden, sum(m.n_instances for m in models), kind=first.kind,
                           device=first.W.device)
    states = [m.state_dict() for m in models]
    stacked.load_state_dict({name: torch.cat([s[name] for s in states]) if value.ndim else value
                             for name, value in states[0].items()})
    if isinstance(stacked, SAE):
        stacked._refresh_hyperparameter_max()
    return stacked


def run_batch(batch: Batch, device, quiet: bool = False, keep_models: bool = False) -> BatchResult:
    """Train the toy models (if any) and SAEs of one batch, grade them, and return the rows. Never raises for a
    failure of a configuration (only for an interrupt): a failed point's row says why in its `error` column."""
    start = time.perf_counter()
    order = batch.trainings()
    trainings = [[batch.points[i] for i in indices] for indices in order]
    try:
        outcome = _train_and_grade(trainings, device, quiet)
    except Exception as error:  # noqa: BLE001 - find which configurations fail; the rest keep their rows
        outcome = _failed(trainings, error) if len(trainings) == 1 else _one_at_a_time(trainings, device, quiet)
    rows, tables = [], []
    for point_index, row, table in zip([i for indices in order for i in indices], outcome.rows, outcome.features):
        point, key = batch.points[point_index], batch.keys[point_index]
        rows.append({"key": key, "batch": batch.id, "instance": row["instance"], "status": row["status"],
                     "error": row["error"], **config_io.identity(point), **row})
        if table is not None and row["status"] == OK:
            tables.append(pd.concat([pd.DataFrame({"key": key}, index=table.index), table], axis=1))
    kept = {}
    if keep_models and outcome.sae is not None:
        kept = {"sae": outcome.sae.to("cpu"), "toy_model": outcome.toy_model.to("cpu") if outcome.toy_model else None}
    features = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame({"key": pd.Series(dtype=str)})
    return BatchResult(batch.id, pd.DataFrame(rows), features, time.perf_counter() - start, **kept)

"""Grading an SAE against the ground truth of its source (formulas: DESIGN.md and grade/diagnostics.py): from
the decoder alone, then streamed over held-out samples. Only the features the source marks gradeable are
graded (a toy model's dropped feature has no direction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
import torch

from ..checks import positive_int
from ..devices import instance_generators, make_generator
from .diagnostics import (AbsorptionCounter, Thresholds, compositions, explain, firing_probabilities, firing_scores,
                          near_counts, parent_index, recovery_by_frequency, source_hierarchy)
from .external import as_gradeable
from .matching import CANDIDATES, EXACT_LIMIT, candidate_edges, cosine_tops, match, recovered, unit_rows
from .synthsaebench_metrics import SynthSAEBenchSums, best_abs_feature, mcc as synthsaebench_mcc
from ..progress import progress_bar
from ..sources import ActivationSource
from ..threads import with_threads

EVAL_SEED = 12_345  # differs from the training seeds' default, so grading sees held-out samples
BATCH_ENTRIES = 1 << 24  # batch × inst × max(n_features, d_sae) per chunk of held-out samples


@dataclass
class Report:
    """The grade of every instance of an SAE."""

    features: pd.DataFrame
    """One row per (instance, true feature): graded, parent, firing_prob, frequency, best_latent,
    best_cos, matched_latent, matched_cos, recovered, activation_corr, precision, recall, f1,
    n_near_latents, split, absorption, parent_miss."""
    summary: pd.DataFrame
    """One row per instance: n_graded, matching, mmcs, hungarian_cos, recovered@τ, activation_mcc,
    precision, recall, f1, split_fraction, absorption, mse, fvu, l0, dead_fraction, dense_fraction,
    mixed_fraction, unmatched_latent_fraction, and SynthSAEBench's sb_mcc, sb_uniqueness, sb_precision,
    sb_recall, sb_f1, sb_accuracy, sb_explained_variance, sb_l0, sb_dead_latents, sb_shrinkage, sb_true_l0."""
    threshold: float
    """τ of recovered@τ."""
    latents: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per (instance, latent): frequency, dead, dense, best_feature, best_cos, matched_feature,
    near_feature, composed_of, composition_cos, matched_to_nothing, and SynthSAEBench's sb_best_feature
    (by |cos|) with sb_precision, sb_recall, sb_f1, sb_accuracy against it."""
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __str__(self) -> str:
        return self.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")

    def explain(self, limit: int = 5) -> str:
        """The failures of each instance in named terms (splitting, absorption, composition, ...)."""
        return explain(self.features, self.latents, self.summary, self.threshold, self.thresholds, limit)

    def recovery_by_frequency(self, bins=None) -> pd.DataFrame:
        """Recovery of the graded features per firing-frequency bin (see diagnostics.recovery_by_frequency)."""
        return recovery_by_frequency(self.features, bins)


def _pearson(n, sum_a, sum_f, sum_aa, sum_ff, sum_af) -> torch.Tensor:
    """Pearson correlation from running sums (float64); 0 where either side never varies."""
    covariance = n * sum_af - sum_a * sum_f
    denominator = ((n * sum_aa - sum_a**2) * (n * sum_ff - sum_f**2)).sqrt()
    return torch.where(denominator > 1e-12, covariance / denominator.clamp_min(1e-300), 0.0)


def _nanmean(values: torch.Tensor) -> float:
    """The mean of the values that are not NaN (NaN if none): torch.nanmean sums in another order."""
    values = values[~values.isnan()]
    return float(values.mean()) if len(values) else float("nan")


@with_threads
@torch.no_grad()
def evaluate(sae, source: ActivationSource, n_samples: int = 20_000, batch_size: int = 4096,
             threshold: float = 0.9, seed: int | list[int] | None = EVAL_SEED, *, hierarchy=None,
             thresholds: Thresholds | None = None, matching: str = "auto", candidates: int = CANDIDATES,
             exact_limit: int = EXACT_LIMIT, quiet: bool = False, threads: int | None = None) -> Report:
    """Grade every instance of `sae` (one SAE per source instance) on `source`.

    Args:
        sae: a toysuper `SAE`, anything with decoder_directions() and encode(), a (decoder, encode[, decode])
            tuple, an object with W_dec and encode (e.g. SAELens's), or a directory (SAELens's format or ours).
        batch_size: held-out samples per chunk, at most (capped so that a chunk holds about BATCH_ENTRIES values).
        threshold: τ of recovered@τ.
        seed: of the held-out samples: an int (one stream for all instances) or one per instance, each
            instance's samples then drawn from its own stream in chunks sized for it alone, so that an
            instance is graded alike alone or in any batch.
        hierarchy: {parent: [children]} or a parent per feature ((n,) or (inst, n), -1 for none), for
            absorption; by default the source distribution's, if it has one.
        matching: "auto" (exact Hungarian while n × k <= exact_limit, else sparse), "exact" or "sparse".
        candidates: latents per feature kept as candidate edges of the sparse matching.
        threads: torch's CPU threads during the call (`threads.torch_threads`).
    """
    n_samples = positive_int("n_samples", n_samples)
    batch_size = positive_int("batch_size", batch_size)
    candidates = positive_int("candidates", candidates)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    if matching not in ("auto", "exact", "sparse"):
        raise ValueError(f"matching must be 'auto', 'exact' or 'sparse', got {matching!r}")
    thresholds = Thresholds() if thresholds is None else thresholds
    if not isinstance(thresholds, Thresholds):
        raise TypeError(f"thresholds must be a toysuper.Thresholds, got {type(thresholds).__name__}")
    if not isinstance(source, ActivationSource):
        raise TypeError(f"source must be an activation source (sample(), true_directions(), gradeable(), e.g. "
                        f"DictionarySource or ToyModelSource), got {type(source).__name__}")
    sae = as_gradeable(sae)
    if (source.n_instances, source.d_hidden) != (sae.n_instances, sae.d_hidden):
        raise ValueError(f"source gives (n_instances, d_hidden)=({source.n_instances}, {source.d_hidden}) "
                         f"but the SAE has ({sae.n_instances}, {sae.d_hidden})")
    n_inst, n = sae.n_instances, source.n_features
    parents = source_hierarchy(source) if hierarchy is None else parent_index(hierarchy, n_inst, n)
    directions = _match_directions(sae, source, thresholds, matching, candidates, exact_limit)
    generator, sizes = _held_out_chunks(source, seed, n_inst, max(n, sae.d_sae), n_samples, batch_size)
    sums = _stream(sae, source, directions, parents, thresholds, generator, sizes, quiet)
    sb, sb_latents = sums["sb"].summary(n_samples, sums["feature"], sums["squared_error"], sums["sum_x"],
                                        sums["sum_xx"], sae.has_decode)
    latents = _latent_columns(sums, directions, thresholds, n_samples, sb_latents)
    features = _feature_columns(source, directions, parents, sums, near_counts(latents["near_feature"], n),
                                threshold, n_samples)
    summary = _summary_table(directions, features, latents, sums, sb, threshold, n_samples, sae.has_decode)
    return Report(_frame(n_inst, n, "feature", features), summary, threshold,
                  _frame(n_inst, sae.d_sae, "latent", latents), thresholds)


@dataclass
class _Directions:
    """The direction-level grade, from the decoder alone (tensors on the SAE's device unless said)."""

    G: torch.Tensor  # true unit directions (inst, n, d)
    D: torch.Tensor  # unit decoder rows (inst, k, d)
    gradeable: torch.Tensor  # (inst, n) bool
    tops: object  # matching.cosine_tops: the best cosines per feature and per latent
    matched_latent: torch.Tensor  # (inst, n) on the CPU, -1 where none
    matched_cos: torch.Tensor  # (inst, n) float64 on the CPU
    methods: list  # the matching used per instance
    sb_mcc: list  # SynthSAEBench's MCC per instance
    parts: torch.Tensor  # compositions on the CPU: the features each latent blends, -1 padded
    fit: torch.Tensor  # compositions on the CPU: the cosine of each blend


def _match_directions(sae, source, thresholds, matching, candidates, exact_limit) -> _Directions:
    """The best cosines per feature and per latent, in chunks, then the matching, per instance."""
    device, n_inst, n = sae.device, sae.n_instances, source.n_features
    G = unit_rows(source.true_directions().to(device).float())
    D = sae.directions.to(device).float()
    if not torch.isfinite(D).all():  # scipy's matching would fail on them with a message naming nothing
        bad = (~torch.isfinite(D)).flatten(1).any(-1).nonzero().squeeze(-1).tolist()
        raise ValueError(f"the SAE's decoder directions contain NaN or infinite values (instances {bad}): "
                         f"was it trained to a NaN loss?")
    D = unit_rows(D)
    gradeable = source.gradeable().to(device)
    tops = cosine_tops(G, D, gradeable, per_row=candidates, per_col=max(4, thresholds.max_parts))
    matched_latent = torch.full((n_inst, n), -1, dtype=torch.long)
    matched_cos = torch.zeros((n_inst, n), dtype=torch.float64)
    methods, sb_mcc = [], []
    for instance in range(n_inst):  # the assignment is a per-instance CPU algorithm
        rows = gradeable[instance].cpu().nonzero().squeeze(-1)
        graded = G[instance, rows.to(device)]
        found = match(graded, D[instance], matching, candidates, exact_limit,
                      edges=candidate_edges(tops, instance, rows.numpy()))
        matched_latent[instance, rows] = torch.from_numpy(found.assignment.latent)
        matched_cos[instance, rows] = torch.from_numpy(found.assignment.cosine)
        methods.append(found.method)
        sb_mcc.append(synthsaebench_mcc(graded, D[instance], matching, candidates=candidates, exact_limit=exact_limit))
    parts, fit = compositions(G, D, tops.col_cos, tops.col_feature, thresholds)
    return _Directions(G, D, gradeable, tops, matched_latent, matched_cos, methods, sb_mcc, parts.cpu(), fit.cpu())


def _held_out_chunks(source, seed, n_inst: int, width: int, n_samples: int, batch_size: int):
    """The held-out samples' generator(s) and chunk sizes (per instance where each instance has its own seed)."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != n_inst:
            raise ValueError(f"seed must be an int or one int per instance ({n_inst}), got {len(seed)} values")
        generator, per_chunk = instance_generators(list(seed), source.device), width
    else:
        generator, per_chunk = make_generator(seed, source.device), n_inst * width
    batch_size = min(batch_size, max(64, BATCH_ENTRIES // per_chunk))  # bounds memory at 64k latents
    return generator, [min(batch_size, n_samples - start) for start in range(0, n_samples, batch_size)]


def _stream(sae, source, directions: _Directions, parents, thresholds, generator, sizes, quiet) -> dict:
    """Running sums over the held-out samples (float64, on the SAE's device): "a", "f", "aa", "ff", "af" of the
    matched latent's activation a and its feature's f; firing counts "feature", "latent", "both",
    "latent_fires"; "squared_error", "sum_x", "sum_xx"; and the "absorption" and "sb" accumulators."""
    device, n_inst, n = sae.device, sae.n_instances, source.n_features
    has_match = (directions.matched_latent >= 0).to(device)
    gather_index = directions.matched_latent.clamp_min(0).to(device)
    zeros = partial(torch.zeros, dtype=torch.float64, device=device)
    sums = {key: zeros(n_inst, n) for key in ("a", "f", "aa", "ff", "af", "feature", "latent", "both")}
    sums.update(latent_fires=zeros(n_inst, sae.d_sae), squared_error=zeros(n_inst),
                sum_x=zeros(n_inst, sae.d_hidden), sum_xx=zeros(n_inst),
                sb=SynthSAEBenchSums(best_abs_feature(directions.G, directions.D, directions.gradeable)),
                absorption=AbsorptionCounter(parents, directions.matched_latent, directions.gradeable,
                                             directions.G, directions.D, thresholds.absorption))
    for size in progress_bar(sizes, desc="grading", quiet=quiet):
        batch = source.sample(size, generator)
        x, f = batch.hidden.to(device).float(), batch.features.to(device)
        acts = sae.encode(x)
        a = torch.gather(acts, 2, gather_index.expand(size, -1, -1)) * has_match
        fires, a_fires = f > 0, a > 0
        sums["absorption"].update(f, acts)
        a, f = a.double(), f.double()
        for key, value in (("a", a), ("f", f), ("aa", a * a), ("ff", f * f), ("af", a * f), ("feature", fires),
                           ("latent", a_fires), ("both", fires & a_fires), ("latent_fires", acts > 0),
                           ("sum_x", x.double())):
            sums[key] += value.sum(0)
        x_hat = sae.decode(acts) if sae.has_decode else None
        if sae.has_decode:
            sums["squared_error"] += (x - x_hat).double().pow(2).sum((0, 2))
        sums["sb"].update(acts, f, x, x_hat)
        sums["sum_xx"] += x.double().pow(2).sum((0, 2))
    return sums


def _latent_columns(sums: dict, directions: _Directions, thresholds, n_samples: int, sb_latents: dict) -> dict:
    """The report's columns per (instance, latent), (inst, k) each: a latent is dead, a composition (it has a
    composition_cos), near a feature (splitting) or matched to nothing."""
    frequency = (sums["latent_fires"] / n_samples).cpu()
    dead = sums["latent_fires"].cpu() == 0
    composed = (directions.parts[..., 0] >= 0) & ~dead
    nearest_cos, nearest_feature = directions.tops.col_cos[..., 0].cpu(), directions.tops.col_feature[..., 0].cpu()
    is_near = ~dead & ~composed & (nearest_cos >= thresholds.split)
    matched_feature = torch.full(dead.shape, -1, dtype=torch.long)
    inst_index, feature_index = (directions.matched_latent >= 0).nonzero(as_tuple=True)
    matched_feature[inst_index, directions.matched_latent[inst_index, feature_index]] = feature_index
    composed_of = np.full(dead.shape, "", dtype=object)
    for instance, latent in composed.nonzero().tolist():  # few: a Python loop is fine
        composed_of[instance, latent] = "+".join(str(p) for p in directions.parts[instance, latent].tolist() if p >= 0)
    return {"frequency": frequency, "dead": dead, "dense": frequency > thresholds.dense,
            "best_feature": nearest_feature, "best_cos": nearest_cos, "matched_feature": matched_feature,
            "near_feature": torch.where(is_near, nearest_feature, -1), "composed_of": composed_of,
            "composition_cos": torch.where(composed, directions.fit, torch.nan),
            "matched_to_nothing": ~dead & ~composed & ~is_near, **sb_latents}


def _feature_columns(source, directions: _Directions, parents, sums: dict, n_near, threshold, n_samples) -> dict:
    """The report's columns per (instance, true feature), (inst, n) each."""
    matched, graded = directions.matched_latent >= 0, directions.gradeable.cpu()
    n_inst, n = matched.shape
    firing_prob = firing_probabilities(source)
    precision, recall, f1 = firing_scores(sums["both"].cpu(), sums["feature"].cpu(), sums["latent"].cpu(), matched)
    absorption, parent_miss = sums["absorption"].rates(n_inst)
    correlation = _pearson(n_samples, sums["a"], sums["f"], sums["aa"], sums["ff"], sums["af"]).cpu()
    n_near = torch.where(graded, n_near, 0)
    return {
        "graded": graded, "parent": parents,
        "firing_prob": firing_prob if firing_prob is not None else torch.full((n_inst, n), torch.nan),
        "frequency": sums["feature"].cpu() / n_samples,
        "best_latent": directions.tops.row_latent[..., 0].cpu(), "best_cos": directions.tops.row_cos[..., 0].cpu(),
        "matched_latent": directions.matched_latent, "matched_cos": directions.matched_cos,
        "recovered": directions.matched_cos >= threshold,
        "activation_corr": torch.where(matched, correlation, 0.0),  # no latent: no correlation
        "precision": precision, "recall": recall, "f1": f1, "n_near_latents": n_near, "split": n_near >= 2,
        "absorption": absorption, "parent_miss": parent_miss,
    }


def _frame(n_inst: int, size: int, index: str, columns: dict) -> pd.DataFrame:
    """A table of one row per (instance, `index`) from (inst, size) columns."""
    flat = {name: np.asarray(value).reshape(-1) for name, value in columns.items()}
    return pd.DataFrame({"instance": np.repeat(np.arange(n_inst), size), index: np.tile(np.arange(size), n_inst),
                         **flat})


def _summary_table(directions: _Directions, features: dict, latents: dict, sums: dict, sb: dict, threshold,
                   n_samples: int, has_decode: bool) -> pd.DataFrame:
    """One row per instance: the means over its graded features (NaN over none), then over its latents."""
    n_inst = len(directions.methods)
    squared_error = sums["squared_error"].cpu() if has_decode else torch.full((n_inst,), torch.nan, dtype=torch.float64)
    total_variance = (sums["sum_xx"] - sums["sum_x"].pow(2).sum(-1) / n_samples).cpu()
    fractions = {"dead_fraction": latents["dead"], "dense_fraction": latents["dense"],
                 "mixed_fraction": ~latents["composition_cos"].isnan(),
                 "unmatched_latent_fraction": latents["matched_to_nothing"]}
    per_instance = {"mse": squared_error / n_samples, "fvu": squared_error / total_variance.clamp_min(1e-30),
                    "l0": sums["latent_fires"].sum(-1).cpu() / n_samples,
                    **{name: value.double().mean(-1) for name, value in fractions.items()}}
    rows = []
    for instance, graded in enumerate(features["graded"]):
        feature = {name: value[instance, graded] for name, value in features.items()}
        rows.append({
            "instance": instance, "n_graded": int(graded.sum()), "matching": directions.methods[instance],
            "mmcs": float(feature["best_cos"].double().mean()),
            "hungarian_cos": float(feature["matched_cos"].mean()),
            f"recovered@{threshold:g}": recovered(feature["matched_cos"].numpy(), threshold),
            "activation_mcc": float(feature["activation_corr"].mean()),
            **{name: _nanmean(feature[name]) for name in ("precision", "recall", "f1")},
            "split_fraction": float(feature["split"].double().mean()),
            "absorption": _nanmean(features["absorption"][instance]),
            **{name: float(value[instance]) for name, value in per_instance.items()},
            "sb_mcc": directions.sb_mcc[instance],
            **{name: value[instance].item() for name, value in sb.items()},
        })
    return pd.DataFrame(rows)

"""How an SAE fails, in named terms: the diagnostics `evaluate` adds to its report.

Per true feature: precision, recall and F1 of its matched latent firing (> 0) against it firing;
splitting, two or more live latents nearest to it at cosine >= `Thresholds.split` (Bricken et al. 2023,
"Towards Monosemanticity"); absorption, for a parent in a hierarchy, the fraction of samples in which a
child fires, the parent's latent stays silent and a firing child's latent has taken on the parent's
direction (Chanin et al. 2024, "A is for Absorption").
Per latent: dead (never fires on the held-out samples), dense (fires on more than `Thresholds.dense` of
them), a composition of 2 to `max_parts` true features that no single one fits, matched to nothing
(fires, no composition, no feature within `split`).
And recovery against feature frequency (Templeton et al. 2024, "Scaling Monosemanticity").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..checks import finite_float, positive_int


@dataclass(frozen=True)
class Thresholds:
    """The cosines and rates behind the named failures."""

    split: float = 0.7
    """A latent counts as near a feature at this cosine or more (splitting, matched to nothing)."""
    composition: float = 0.9
    """Fit cosine a combination of features must reach, and that no single feature may."""
    max_parts: int = 3
    """Most features a composition may combine."""
    absorption: float = 0.1
    """How much more a child's latent must lean toward its parent's direction than the child's
    own direction does: cos(latent, parent) - cos(child, parent)."""
    dense: float = 0.1
    """A latent firing on more than this fraction of samples is dense."""

    def __post_init__(self):
        for name in ("split", "composition", "dense"):
            value = finite_float(name, getattr(self, name))
            if not 0 < value <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
        if not -2 < finite_float("absorption", self.absorption) <= 2:
            raise ValueError(f"absorption must lie in (-2, 2], got {self.absorption!r}")
        if positive_int("max_parts", self.max_parts) < 2:
            raise ValueError(f"max_parts must be at least 2, got {self.max_parts!r}")


def _dist_values(source, value: torch.Tensor) -> torch.Tensor:
    """`value` (dist_inst, ...) for the source's instances (ToyModelSource and OneInstance say which)."""
    if value.shape[0] == source.n_instances:
        return value
    instances = getattr(source, "instances", None)
    if instances is None:
        raise ValueError(f"the source's distribution has {value.shape[0]} instances but the source "
                         f"{source.n_instances}, and the source does not say which it shows")
    return value[torch.as_tensor(instances, device=value.device)]


def firing_probabilities(source) -> torch.Tensor | None:
    """The marginal firing probability of each feature, (inst, n), when the source's distribution knows it."""
    prob = getattr(getattr(source, "dist", None), "firing_prob", None)
    if not isinstance(prob, torch.Tensor) or prob.ndim != 2:
        return None
    return _dist_values(source, prob).float().cpu()


def parent_index(hierarchy, n_instances: int, n_features: int) -> torch.Tensor:
    """A hierarchy as the parent of every feature, (inst, n) long, -1 for none.

    `hierarchy`: a mapping {parent: [children, ...]}, a `toysuper.hierarchy.Hierarchy` (for every
    instance), or parent indices per feature, (n_features,) or (n_instances, n_features), -1 for none.
    """
    if hasattr(hierarchy, "edges"):  # a toysuper Hierarchy
        hierarchy = dict(hierarchy.edges)
    if isinstance(hierarchy, Mapping):
        parents = torch.full((n_features,), -1, dtype=torch.long)
        for parent, children in hierarchy.items():
            for child in children:
                for name, index in (("parent", parent), ("child", child)):
                    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                            or not 0 <= index < n_features:
                        raise ValueError(f"hierarchy: {name} {index!r} is not a feature index below {n_features}")
                if parents[child] >= 0 and parents[child] != parent:
                    raise ValueError(f"hierarchy: feature {child} has two parents ({int(parents[child])} and {parent})")
                parents[child] = int(parent)
    else:
        try:
            parents = torch.as_tensor(hierarchy).long().cpu()
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"hierarchy must be a {{parent: children}} mapping or a tensor of parent indices, "
                            f"got {type(hierarchy).__name__}") from error
    if parents.ndim == 1:
        parents = parents.expand(n_instances, -1)
    if tuple(parents.shape) != (n_instances, n_features):
        raise ValueError(f"hierarchy has shape {tuple(parents.shape)}; expected ({n_features},) or "
                         f"({n_instances}, {n_features})")
    if ((parents < -1) | (parents >= n_features)).any():
        raise ValueError(f"hierarchy: parent indices must be -1 or below {n_features}")
    if (parents == torch.arange(n_features)).any():
        raise ValueError("hierarchy: a feature cannot be its own parent")
    return parents.contiguous()


def source_hierarchy(source) -> torch.Tensor:
    """The parent of every feature (inst, n) from the source's `dist.parent` or `dist.hierarchy`; -1 for none."""
    dist = getattr(source, "dist", None)
    value = getattr(dist, "parent", None)
    if value is None:
        value = getattr(dist, "hierarchy", None)
    if value is None:
        return torch.full((source.n_instances, source.n_features), -1)
    if isinstance(value, torch.Tensor) and value.ndim == 2:  # one hierarchy per distribution instance
        return _dist_values(source, parent_index(value, value.shape[0], source.n_features))
    return parent_index(value, source.n_instances, source.n_features)


def compositions(true_directions: torch.Tensor, decoder_directions: torch.Tensor, col_cos: torch.Tensor,
                 col_feature: torch.Tensor, thresholds: Thresholds) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents whose direction is a positive combination of true features and none of them alone.

    For m = 2..max_parts, the unit latent is fitted by least squares on its m nearest features (col_cos,
    col_feature: (inst, k, c), c >= max_parts); the first m whose fit cosine reaches `composition` with all
    coefficients positive, while the nearest single feature stays below it, names the parts. G (inst, n, d)
    and D (inst, k, d) unit -> parts (inst, k, max_parts), -1 padded, and the fit cosine (inst, k), NaN where none.
    """
    n_inst, k, d = decoder_directions.shape
    m_max = min(thresholds.max_parts, col_feature.shape[-1])
    parts = torch.full((n_inst, k, thresholds.max_parts), -1, dtype=torch.long, device=col_cos.device)
    fit = torch.full((n_inst, k), torch.nan, device=col_cos.device)
    instance = torch.arange(n_inst, device=col_cos.device)[:, None, None]
    step = max(1, (1 << 24) // max(1, n_inst * m_max * d))  # latents per chunk: 16M entries of G
    for start in range(0, k, step):
        cos, feature = col_cos[:, start:start + step], col_feature[:, start:start + step]
        chunk_parts, chunk_fit = parts[:, start:start + step], fit[:, start:start + step]  # views
        alone = cos[..., 0] < thresholds.composition
        for m in range(2, m_max + 1):
            rhs = cos[..., :m].double()  # (inst, chunk, m): cosines with the candidate parts
            valid = torch.isfinite(rhs).all(-1)
            rhs = torch.where(torch.isfinite(rhs), rhs, 0.0)
            G = true_directions[instance, feature[..., :m]].double()  # (inst, chunk, m, d)
            gram = G @ G.transpose(-1, -2) + 1e-9 * torch.eye(m, dtype=torch.float64, device=G.device)
            coef = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
            fit_m = (rhs * coef).sum(-1).clamp(0, 1).sqrt()  # |projection of the unit latent on their span|
            new = valid & alone & chunk_fit.isnan() & (coef > 0).all(-1) & (fit_m >= thresholds.composition)
            chunk_parts[..., :m] = torch.where(new[..., None], feature[..., :m], chunk_parts[..., :m])
            chunk_fit[:] = torch.where(new, fit_m.float(), chunk_fit)
    return parts, fit


def near_counts(near_feature: torch.Tensor, n_features: int) -> torch.Tensor:
    """How many latents sit near each feature: (inst, k) feature index or -1 -> (inst, n) counts."""
    counts = torch.zeros(near_feature.shape[0], n_features + 1, dtype=torch.long, device=near_feature.device)
    counts.scatter_add_(1, near_feature.clamp_min(-1) + 1, torch.ones_like(near_feature))
    return counts[:, 1:]


class AbsorptionCounter:
    """Counts, per parent p, the samples where a child fires and those where p is absorbed: some child c of p
    fires, p's matched latent does not (or p has none), and the matched latent of a firing child c fires while
    leaning toward p: cos(D_π(c), G_p) - cos(G_c, G_p) >= threshold. parents, matched_latent: (inst, n), -1
    for none; gradeable (inst, n) bool; G, D unit, (inst, n, d) and (inst, k, d)."""

    def __init__(self, parents: torch.Tensor, matched_latent: torch.Tensor, gradeable: torch.Tensor,
                 G: torch.Tensor, D: torch.Tensor, threshold: float):
        device = G.device
        parents, matched_latent, gradeable = parents.to(device), matched_latent.to(device), gradeable.to(device)
        has_pair = (parents >= 0) & gradeable & torch.gather(gradeable, 1, parents.clamp_min(0))
        self.inst, self.child = has_pair.nonzero(as_tuple=True)
        self.parent = parents[self.inst, self.child]
        self.parent_latent = matched_latent[self.inst, self.parent]
        self.child_latent = matched_latent[self.inst, self.child]
        lean = (D[self.inst, self.child_latent.clamp_min(0)] * G[self.inst, self.parent]).sum(-1) \
            - (G[self.inst, self.child] * G[self.inst, self.parent]).sum(-1)
        self.carries = (self.child_latent >= 0) & (lean >= threshold)
        self.n_features = parents.shape[1]
        groups, self.group = torch.unique(self.inst * self.n_features + self.parent, return_inverse=True)
        self.group_inst, self.group_parent = groups // self.n_features, groups % self.n_features
        self.children_fired = torch.zeros(len(groups), dtype=torch.float64, device=device)
        self.parent_missed = torch.zeros_like(self.children_fired)
        self.absorbed = torch.zeros_like(self.children_fired)

    def _any(self, per_pair: torch.Tensor) -> torch.Tensor:
        """(batch, pairs) bool -> (batch, groups) bool: true for any pair of the group."""
        out = torch.zeros(per_pair.shape[0], len(self.group_inst), device=per_pair.device)
        return out.index_add_(1, self.group, per_pair.float()) > 0

    def update(self, features: torch.Tensor, acts: torch.Tensor) -> None:
        """features (batch, inst, n), acts (batch, inst, k)."""
        if len(self.inst) == 0:
            return
        child_fires = features[:, self.inst, self.child] > 0
        parent_silent = (acts[:, self.inst, self.parent_latent.clamp_min(0)] <= 0) | (self.parent_latent < 0)
        child_latent_fires = (acts[:, self.inst, self.child_latent.clamp_min(0)] > 0) & (self.child_latent >= 0)
        self.children_fired += self._any(child_fires).sum(0)
        self.parent_missed += self._any(child_fires & parent_silent).sum(0)
        self.absorbed += self._any(child_fires & parent_silent & child_latent_fires & self.carries).sum(0)

    def rates(self, n_instances: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Absorption and parent-latent miss rates per parent, (inst, n); NaN where no child ever fired."""
        absorption = torch.full((n_instances, self.n_features), torch.nan, dtype=torch.float64)
        missed = absorption.clone()
        fired = self.children_fired.cpu()
        ok = fired > 0
        where = (self.group_inst.cpu()[ok], self.group_parent.cpu()[ok])
        absorption[where] = self.absorbed.cpu()[ok] / fired[ok]
        missed[where] = self.parent_missed.cpu()[ok] / fired[ok]
        return absorption, missed


def firing_scores(both: torch.Tensor, feature_fires: torch.Tensor, latent_fires: torch.Tensor,
                  has_latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Precision = both / latent fires, recall = both / feature fires and F1 of a latent's firing against its
    feature's, from counts; NaN where undefined (no firing); a feature without a latent has recall and F1 0."""
    both, feature_fires, latent_fires = both.double(), feature_fires.double(), latent_fires.double()
    nan = torch.tensor(torch.nan, dtype=torch.float64)
    precision = torch.where((latent_fires > 0) & has_latent, both / latent_fires.clamp_min(1), nan)
    recall = torch.where(feature_fires > 0, torch.where(has_latent, both / feature_fires.clamp_min(1), 0.0), nan)
    f1 = torch.where(has_latent, 2 * both / (feature_fires + latent_fires).clamp_min(1), 0.0)
    f1 = torch.where((feature_fires > 0) | (has_latent & (latent_fires > 0)), f1, nan)
    return precision, recall, f1


def recovery_by_frequency(features: pd.DataFrame, bins=None) -> pd.DataFrame:
    """Recovery of the graded features binned by firing frequency (by default in half-decades), one row per
    (instance, bin): freq_low, freq_high, n_features, recovered, matched_cos and f1 (means), frequency_source.

    The frequency is the distribution's firing probability where known, else the one measured on the
    held-out samples (then a feature that never fired there falls outside every bin).
    """
    graded = features[features["graded"]].copy()
    column = "firing_prob" if "firing_prob" in graded and graded["firing_prob"].notna().all() else "frequency"
    frequency = graded[column].to_numpy(dtype=float)
    if bins is None:
        positive = frequency[frequency > 0]
        low = np.floor(np.log10(positive.min())) if len(positive) else -6.0
        high = np.ceil(np.log10(positive.max())) if len(positive) else 0.0
        bins = np.logspace(low, max(high, low + 1), int(max(high, low + 1) - low) * 2 + 1)
    graded["bin"] = pd.cut(frequency, np.asarray(bins, dtype=float), include_lowest=True)
    table = graded.groupby(["instance", "bin"], observed=True).agg(
        n_features=("feature", "size"), recovered=("recovered", "mean"),
        matched_cos=("matched_cos", "mean"), f1=("f1", "mean")).reset_index()
    table.insert(1, "freq_low", [interval.left for interval in table["bin"]])
    table.insert(2, "freq_high", [interval.right for interval in table["bin"]])
    table["frequency_source"] = column
    return table.drop(columns="bin")


def _listing(items, limit: int) -> str:
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", … ({len(items)} in all)" if len(items) > limit else "")


def explain(features: pd.DataFrame, latents: pd.DataFrame, summary: pd.DataFrame, threshold: float,
            thresholds: Thresholds, limit: int = 5) -> str:
    """The report's failures in named terms, one paragraph per instance."""
    lines = []
    for row in summary.to_dict("records"):
        instance = row["instance"]
        f = features[(features["instance"] == instance) & features["graded"]]
        lat = latents[latents["instance"] == instance]
        lines.append(f"instance {instance}: {int(f['recovered'].sum())}/{len(f)} true features recovered at "
                     f"cos >= {threshold:g} ({row['matching']} matching), MMCS {row['mmcs']:.3f}, "
                     f"mean F1 of firing {row['f1']:.3f}")
        missed = f[~f["recovered"]]
        if len(missed):
            lines.append(f"  not recovered: features {_listing(missed['feature'], limit)}")
        split = f[f["split"]]
        for feature, count in zip(split["feature"][:limit], split["n_near_latents"][:limit]):
            near = lat[lat["near_feature"] == feature]["latent"]
            lines.append(f"  splitting: feature {feature} is covered by {count} latents ({_listing(near, limit)})")
        absorbed = f[f["absorption"] > 0].sort_values("absorption", ascending=False)
        for feature, rate in zip(absorbed["feature"][:limit], absorbed["absorption"][:limit]):
            lines.append(f"  absorption: parent feature {feature} is absorbed by its children's latents in "
                         f"{rate:.0%} of the samples where a child fires")
        composed = lat[lat["composed_of"] != ""]
        for latent, parts, fit in zip(composed["latent"][:limit], composed["composed_of"][:limit],
                                      composed["composition_cos"][:limit]):
            lines.append(f"  composition: latent {latent} mixes features {parts} (fit cos {fit:.2f})")
        if len(composed) > limit:
            lines.append(f"  composition: … {len(composed)} mixed latents in all")
        for name, label in (("dead", "dead latents"),
                            ("dense", f"dense latents (fire on > {thresholds.dense:.0%} of samples)"),
                            ("matched_to_nothing", "latents matched to nothing")):
            chosen = lat[lat[name]]["latent"]
            if len(chosen):
                lines.append(f"  {label}: {_listing(chosen, limit)}")
    return "\n".join(lines)

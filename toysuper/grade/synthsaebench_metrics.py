"""SynthSAEBench's metrics (Chanin & Garriga-Alonso 2026, arXiv 2602.14687), as SAELens's
`eval_sae_on_synthetic_data` (sae_lens/synthetic/evals.py) defines them, with G (n × d) and D (k × d) unit
rows and |C| = |G Dᵀ|; only the features the source marks gradeable take part:

- MCC: the mean matched |cos| over the min(n, k) pairs of the assignment maximising Σ |C|
  (O'Neill et al. 2025, arXiv 2505.20254).
- uniqueness: the number of distinct best features b(j) = argmax_i |C_ij| (the first on a tie), over k.
- per latent j, as a detector of b(j) firing (> 0) when its activation is != 0: precision, recall, F1
  (each 0 where undefined) and accuracy, averaged over all k latents, dead ones included.
- explained variance: 1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²) (1 if both are below 1e-10, 0 if only the variance is).
- L0, dead latents (a count), and shrinkage: the mean of ‖x̂‖ / ‖x‖ over samples with ‖x‖ > 1e-6 (0 if none).

The sample-level metrics come from running sums that `evaluate` streams (`SynthSAEBenchSums`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from .matching import CHUNK_ENTRIES, match, unit_rows

MIN_INPUT_NORM = 1e-6
MIN_VARIANCE = 1e-10


def best_abs_feature(true_directions: torch.Tensor, decoder_directions: torch.Tensor,
                     row_mask: torch.Tensor | None = None, chunk_entries: int = CHUNK_ENTRIES) -> torch.Tensor:
    """Each latent's best feature by |cos|, the first on a tie (as torch.argmax), among the features
    `row_mask` (inst, n) allows: G (inst, n, d), D (inst, k, d) -> (inst, k) long. |C| is computed in chunks."""
    G, D = unit_rows(true_directions.float()), unit_rows(decoder_directions.float())
    n_inst, n, k = G.shape[0], G.shape[1], D.shape[1]
    best_cos = torch.full((n_inst, k), -1.0, device=G.device)
    best = torch.zeros((n_inst, k), dtype=torch.long, device=G.device)
    rows = max(1, chunk_entries // max(1, n_inst * k))
    for start in range(0, n, rows):
        C = (G[:, start:start + rows] @ D.transpose(-1, -2)).abs_()  # (inst, rows, k)
        if row_mask is not None:
            C = C.masked_fill_(~row_mask[:, start:start + rows, None].to(G.device), -1.0)
        values, index = C.max(dim=1)  # first maximal row
        better = values > best_cos  # strictly: an earlier chunk keeps a tie
        best_cos = torch.where(better, values, best_cos)
        best = torch.where(better, index + start, best)
    return best


def uniqueness(best_feature: torch.Tensor, n_features: int) -> torch.Tensor:
    """Distinct best features over latents, (inst, k) -> (inst,) float64."""
    seen = torch.zeros(best_feature.shape[0], n_features, dtype=torch.bool, device=best_feature.device)
    seen.scatter_(1, best_feature, True)
    return seen.sum(1).double() / best_feature.shape[1]


def mcc(true_directions: torch.Tensor, decoder_directions: torch.Tensor, method: str = "auto",
        **match_options) -> float:
    """Mean |cos| over the |cos|-Hungarian's min(n, k) pairs of one instance: G (n, d), D (k, d); `method`
    and `match_options` (candidates, exact_limit) as in `matching.match`."""
    n, k = true_directions.shape[0], decoder_directions.shape[0]
    if min(n, k) == 0:
        return float("nan")
    found = match(true_directions, decoder_directions, method, absolute=True, **match_options)
    return float(found.assignment.cosine[found.assignment.latent >= 0].sum() / min(n, k))


def classification(true_positives: torch.Tensor, latent_fires: torch.Tensor, feature_fires: torch.Tensor,
                   n_samples: int) -> dict[str, torch.Tensor]:
    """Per-latent precision TP/(TP+FP), recall TP/(TP+FN), F1 = 2PR/(P+R) and accuracy (TP+TN)/N from counts
    (..., k) of samples where latent j and its best feature both fire, where j fires and where its feature does;
    undefined ratios are 0."""
    tp, latent, feature = true_positives.double(), latent_fires.double(), feature_fires.double()
    fp, fn = latent - tp, feature - tp
    tn = n_samples - tp - fp - fn
    precision = torch.where(latent > 0, tp / latent.clamp_min(1), 0.0)
    recall = torch.where(feature > 0, tp / feature.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-300), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "accuracy": (tp + tn) / max(n_samples, 1)}


def explained_variance(squared_error: torch.Tensor, sum_x: torch.Tensor, sum_xx: torch.Tensor,
                       n_samples: int) -> torch.Tensor:
    """1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²) per instance (float64), from Σ‖x − x̂‖² (inst,), Σx (inst, d) and
    Σ‖x‖² (inst,) over samples."""
    mse = squared_error.double() / n_samples
    variance = sum_xx.double() / n_samples - (sum_x.double() / n_samples).pow(2).sum(-1)
    flat = torch.where(mse < MIN_VARIANCE, 1.0, 0.0).to(mse)
    return torch.where(variance < MIN_VARIANCE, flat, 1 - mse / variance.clamp_min(MIN_VARIANCE))


class SynthSAEBenchSums:
    """The running sums behind SynthSAEBench's sample-level metrics, given each latent's `best_abs_feature`
    (inst, k) and fed batch by batch by `evaluate`."""

    def __init__(self, best_feature: torch.Tensor):
        self.best_feature = best_feature
        zeros = partial(torch.zeros, dtype=torch.float64, device=best_feature.device)
        self.latent_fires, self.true_positives = zeros(best_feature.shape), zeros(best_feature.shape)
        self.shrinkage_sum, self.shrinkage_count = zeros(best_feature.shape[0]), zeros(best_feature.shape[0])

    def update(self, acts: torch.Tensor, features: torch.Tensor, x: torch.Tensor, x_hat: torch.Tensor | None):
        """acts (batch, inst, k); features (batch, inst, n); x and x_hat (batch, inst, d) (x_hat None: no decode)."""
        fires = acts != 0
        best_fires = torch.gather(features > 0, 2, self.best_feature.expand(acts.shape[0], -1, -1))  # bools: 5x faster
        self.latent_fires += fires.sum(0, dtype=torch.int32)  # int32 sums bools twice as fast as the default int64
        self.true_positives += (fires & best_fires).sum(0, dtype=torch.int32)
        if x_hat is not None:
            norm_x, norm_x_hat = x.norm(dim=-1), x_hat.norm(dim=-1)
            valid = norm_x > MIN_INPUT_NORM
            self.shrinkage_sum += torch.where(valid, norm_x_hat / norm_x.clamp_min(MIN_INPUT_NORM), 0.0).double().sum(0)
            self.shrinkage_count += valid.sum(0)

    def summary(self, n_samples: int, feature_fires: torch.Tensor, squared_error: torch.Tensor, sum_x: torch.Tensor,
                sum_xx: torch.Tensor, has_decode: bool) -> tuple[dict[str, np.ndarray], dict[str, torch.Tensor]]:
        """Per-instance summary columns and per-latent columns (CPU), named sb_* to keep them apart from
        toysuper's own; feature_fires: samples where each true feature fires, (inst, n); the sums as in
        `explained_variance`."""
        feature_fires_of_best = torch.gather(feature_fires.to(self.best_feature.device), 1, self.best_feature)
        scores = {name: value.cpu() for name, value in
                  classification(self.true_positives, self.latent_fires, feature_fires_of_best, n_samples).items()}
        nan = torch.full(self.best_feature.shape[:1], torch.nan, dtype=torch.float64)
        shrinkage = torch.where(self.shrinkage_count > 0, self.shrinkage_sum / self.shrinkage_count.clamp_min(1), 0.0)
        summary = {
            "sb_uniqueness": uniqueness(self.best_feature, feature_fires.shape[1]).cpu(),
            **{f"sb_{name}": value.mean(-1) for name, value in scores.items()},
            "sb_explained_variance": explained_variance(squared_error, sum_x, sum_xx, n_samples).cpu()
            if has_decode else nan,
            "sb_l0": (self.latent_fires.sum(-1) / n_samples).cpu(),
            "sb_dead_latents": (self.latent_fires == 0).sum(-1).cpu(),
            "sb_shrinkage": shrinkage.cpu() if has_decode else nan,
            "sb_true_l0": (feature_fires.sum(-1) / n_samples).cpu(),
        }
        latents = {"sb_best_feature": self.best_feature.cpu(),
                   **{f"sb_{name}": value for name, value in scores.items()}}
        return {name: value.numpy() for name, value in summary.items()}, latents

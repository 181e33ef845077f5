"""Grading an SAE against the ground truth of its source.

Direction-level (from the decoder alone): MMCS, Hungarian-matched cosine, recovered@τ.
Activation-level (on held-out samples): Pearson correlation between each true feature
and its matched latent, reconstruction error, L0, dead latents. Formulas in DESIGN.md and
the README; only features the source marks gradeable are graded (a toy model's dropped
feature has no direction to find).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .checks import positive_int
from .devices import make_generator
from .matching import cosine_matrix, hungarian, mmcs, recovered
from .sae import SAE
from .sources import ActivationSource

EVAL_SEED = 12_345  # differs from the training seeds' default, so grading sees held-out samples


@dataclass
class Report:
    """The grade of every instance of an SAE."""

    features: pd.DataFrame
    """One row per (instance, true feature): graded, best_latent, best_cos, matched_latent,
    matched_cos, recovered, activation_corr."""
    summary: pd.DataFrame
    """One row per instance: n_graded, mmcs, hungarian_cos, recovered@τ, activation_mcc,
    mse, fvu, l0, dead_fraction."""
    threshold: float
    """τ of recovered@τ."""

    def __str__(self) -> str:
        return self.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _pearson(n, sum_a, sum_f, sum_aa, sum_ff, sum_af) -> torch.Tensor:
    """Pearson correlation from running sums (float64); 0 where either side never varies."""
    covariance = n * sum_af - sum_a * sum_f
    variance_a = n * sum_aa - sum_a**2
    variance_f = n * sum_ff - sum_f**2
    denominator = (variance_a * variance_f).sqrt()
    return torch.where(denominator > 1e-12, covariance / denominator.clamp_min(1e-300), 0.0)


@torch.no_grad()
def evaluate(sae: SAE, source: ActivationSource, n_samples: int = 20_000, batch_size: int = 4096,
             threshold: float = 0.9, seed: int | None = EVAL_SEED) -> Report:
    """Grade every instance of `sae` on `source`.

    Args:
        sae: trained SAEs, one per source instance.
        source: where the activations and the truth come from.
        n_samples: held-out samples for the activation-level scores.
        batch_size: samples per chunk (memory).
        threshold: τ of recovered@τ.
        seed: seed of the held-out samples (by default not the training stream's).
    """
    n_samples = positive_int("n_samples", n_samples)
    batch_size = positive_int("batch_size", batch_size)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got {threshold!r}")
    if (source.n_instances, source.d_hidden) != (sae.n_instances, sae.d_hidden):
        raise ValueError(f"source gives (n_instances, d_hidden)=({source.n_instances}, {source.d_hidden}) "
                         f"but the SAE has ({sae.n_instances}, {sae.d_hidden})")
    device = sae.device
    cosines = cosine_matrix(source.true_directions().to(device), sae.decoder_directions())  # (inst, n, k)
    gradeable = source.gradeable().cpu()
    best_cos, best_latent = cosines.max(dim=-1)
    matched_latent = torch.full(gradeable.shape, -1, dtype=torch.long)
    matched_cos = torch.zeros(gradeable.shape, dtype=torch.float64)
    instance_mmcs = []
    for instance in range(sae.n_instances):  # Hungarian is a per-instance CPU algorithm
        rows = gradeable[instance].nonzero().squeeze(-1)
        graded_cosines = cosines[instance][rows.to(device)].cpu()
        assignment = hungarian(graded_cosines)
        matched_latent[instance, rows] = torch.from_numpy(assignment.latent)
        matched_cos[instance, rows] = torch.from_numpy(assignment.cosine)
        instance_mmcs.append(mmcs(graded_cosines))

    # Activation-level scores, streamed over held-out samples as running sums.
    has_match = (matched_latent >= 0).to(device)
    gather_index = matched_latent.clamp_min(0).to(device)  # (inst, n)
    sums = {key: torch.zeros(gradeable.shape, dtype=torch.float64, device=device) for key in ("a", "f", "aa", "ff", "af")}
    squared_error = torch.zeros(sae.n_instances, dtype=torch.float64, device=device)
    sum_x = torch.zeros(sae.n_instances, sae.d_hidden, dtype=torch.float64, device=device)
    sum_xx = torch.zeros(sae.n_instances, dtype=torch.float64, device=device)
    active_count = torch.zeros(sae.n_instances, dtype=torch.float64, device=device)
    fired = torch.zeros(sae.n_instances, sae.d_sae, dtype=torch.bool, device=device)
    generator = make_generator(seed, source.device)
    done = 0
    while done < n_samples:
        size = min(batch_size, n_samples - done)
        batch = source.sample(size, generator)
        x, f = batch.hidden.to(device), batch.features.to(device).double()
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
        a = torch.gather(acts, 2, gather_index.expand(size, -1, -1)).double() * has_match
        sums["a"] += a.sum(0)
        sums["f"] += f.sum(0)
        sums["aa"] += (a * a).sum(0)
        sums["ff"] += (f * f).sum(0)
        sums["af"] += (a * f).sum(0)
        squared_error += (x - x_hat).double().pow(2).sum((0, 2))
        sum_x += x.double().sum(0)
        sum_xx += x.double().pow(2).sum((0, 2))
        active = acts > 0
        active_count += active.double().sum((0, 2))
        fired |= active.any(0)
        done += size
    correlation = _pearson(n_samples, sums["a"], sums["f"], sums["aa"], sums["ff"], sums["af"]).cpu()
    correlation = torch.where(matched_latent >= 0, correlation, 0.0)  # no latent: no correlation
    total_variance = sum_xx - sum_x.pow(2).sum(-1) / n_samples

    feature_rows = []
    for instance in range(sae.n_instances):
        for feature in range(gradeable.shape[1]):
            feature_rows.append({
                "instance": instance, "feature": feature, "graded": bool(gradeable[instance, feature]),
                "best_latent": int(best_latent[instance, feature]), "best_cos": float(best_cos[instance, feature]),
                "matched_latent": int(matched_latent[instance, feature]),
                "matched_cos": float(matched_cos[instance, feature]),
                "recovered": bool(matched_cos[instance, feature] >= threshold),
                "activation_corr": float(correlation[instance, feature]),
            })
    features = pd.DataFrame(feature_rows)
    summary_rows = []
    for instance in range(sae.n_instances):
        graded = gradeable[instance]
        summary_rows.append({
            "instance": instance,
            "n_graded": int(graded.sum()),
            "mmcs": instance_mmcs[instance],
            "hungarian_cos": float(matched_cos[instance, graded].mean()) if graded.any() else float("nan"),
            f"recovered@{threshold:g}": recovered(matched_cos[instance, graded].numpy(), threshold),
            "activation_mcc": float(correlation[instance, graded].mean()) if graded.any() else float("nan"),
            "mse": float(squared_error[instance] / n_samples),
            "fvu": float(squared_error[instance] / total_variance[instance].clamp_min(1e-30)),
            "l0": float(active_count[instance] / n_samples),
            "dead_fraction": float((~fired[instance]).double().mean()),
        })
    return Report(features, pd.DataFrame(summary_rows), threshold)

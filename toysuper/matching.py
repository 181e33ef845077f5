"""Matching true features to SAE latents by the cosine of their directions.

With G the true directions (n × d, unit rows) and D the decoder directions (k × d, unit
rows), C = G Dᵀ. Pure functions on one instance at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def cosine_matrix(true_directions: torch.Tensor, decoder_directions: torch.Tensor) -> torch.Tensor:
    """C = G Dᵀ of unit rows: (..., n, d) and (..., k, d) -> (..., n, k)."""
    G = true_directions / true_directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    D = decoder_directions / decoder_directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return G @ D.transpose(-1, -2)


def mmcs(cosines: torch.Tensor) -> float:
    """Mean max cosine similarity (Sharkey et al. 2022): mean over rows of max_j C_ij."""
    if cosines.shape[0] == 0:
        return float("nan")
    return cosines.max(dim=-1).values.mean().item()


class Assignment(NamedTuple):
    """A one-to-one matching of true features (rows) to latents (columns)."""

    latent: np.ndarray
    """Matched latent per true feature, (n,); -1 where the feature got none."""
    cosine: np.ndarray
    """Matched cosine per true feature, (n,); 0 where the feature got none."""


def hungarian(cosines: torch.Tensor | np.ndarray) -> Assignment:
    """The one-to-one assignment maximising Σ C_{i,π(i)} (scipy's linear_sum_assignment).

    With fewer latents than features, the features left over get latent -1 and cosine 0.
    """
    C = np.asarray(cosines.detach().cpu().double() if isinstance(cosines, torch.Tensor) else cosines, dtype=float)
    latent = np.full(C.shape[0], -1, dtype=np.int64)
    cosine = np.zeros(C.shape[0])
    if C.size:
        rows, cols = linear_sum_assignment(C, maximize=True)
        latent[rows] = cols
        cosine[rows] = C[rows, cols]
    return Assignment(latent, cosine)


def recovered(matched_cosine: np.ndarray, threshold: float = 0.9) -> float:
    """recovered@τ: fraction of true features whose matched cosine is >= τ."""
    if len(matched_cosine) == 0:
        return float("nan")
    return float(np.mean(matched_cosine >= threshold))

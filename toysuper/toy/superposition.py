"""Superposition measures on a weight matrix W whose rows are feature directions.

All functions take W of shape (inst, n_features, d_hidden): row i of instance k is the
hidden-space direction of feature i (the paper's column W_{:,i}). Formulas from
Elhage et al. 2022, "Toy Models of Superposition".
"""

from __future__ import annotations

import torch

REPRESENTED_NORM = 0.5  # the paper's threshold: a feature is represented when ||W_i|| >= 0.5


def feature_norms(W: torch.Tensor) -> torch.Tensor:
    """||W_i||, shape (inst, n_features)."""
    return W.norm(dim=-1)


def represented(W: torch.Tensor, threshold: float = REPRESENTED_NORM) -> torch.Tensor:
    """Boolean (inst, n_features): features whose direction has norm >= `threshold`."""
    return feature_norms(W) >= threshold


def dimensions_per_feature(W: torch.Tensor) -> torch.Tensor:
    """D* = m / ||W||_F^2, shape (inst,): hidden dimensions spent per feature learned."""
    d_hidden = W.shape[-1]
    return d_hidden / W.pow(2).sum(dim=(-2, -1))


def _projections(W: torch.Tensor, eps: float) -> torch.Tensor:
    """(Ŵ_i · W_j) for all i, j: shape (inst, n_features, n_features)."""
    unit = W / W.norm(dim=-1, keepdim=True).clamp_min(eps)
    return unit @ W.transpose(-1, -2)


def interference(W: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Σ_{j≠i} (Ŵ_i · W_j)², shape (inst, n_features): how much other features leak onto i."""
    squared = _projections(W, eps).pow(2)
    return squared.sum(-1) - torch.diagonal(squared, dim1=-2, dim2=-1)


def feature_dimensionality(W: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)², shape (inst, n_features).

    1 for a feature with a dimension of its own, 1/2 for an antipodal pair, 2/5 in a
    pentagon; 0 for a feature that is not represented at all.
    """
    denominator = _projections(W, eps).pow(2).sum(-1)
    return W.pow(2).sum(-1) / denominator.clamp_min(eps)

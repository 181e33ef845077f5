"""Correlated firing across all features through a low-rank Gaussian copula.

SynthSAEBench (Chanin & Garriga-Alonso 2026, arXiv 2602.14687; SAELens's
`generate_random_low_rank_correlation_matrix`) thresholds a Gaussian vector with a low-rank covariance.
Per sample

    z = F e + s ⊙ η,   e ~ N(0, I_r),  η ~ N(0, I_n),  s_i = sqrt(1 - ||F_i||²),

so every z_i is exactly N(0, 1) and corr(z_i, z_j) = F_i · F_j. Feature i fires iff
z_i > Φ⁻¹(1 - p_i), with probability p_i exactly: the copula moves which features fire together,
never how often each fires. F has N(0, scale²) entries; a row whose squared norm would pass 0.99 is
shrunk to 0.99 (as SAELens does), which keeps s_i >= 0.1.
"""

from __future__ import annotations

import torch

from ..checks import non_negative, positive_int

MAX_SHARED_VARIANCE = 0.99


class LowRankCorrelation:
    """A rank-r Gaussian copula for `FeatureDistribution(correlation=...)`.

    Args:
        rank: r, the number of shared Gaussian factors.
        scale: the standard deviation of the loadings (0.1 in SynthSAEBench-16k); two features'
            latent Gaussians typically correlate by scale² · sqrt(r).
        seed: seed of the loadings, drawn on the CPU in float32 (SAELens's for the same seed).
    """

    def __init__(self, rank: int = 25, scale: float = 0.1, seed: int = 0):
        self.rank = positive_int("rank", rank)
        self.scale = non_negative("scale", scale)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def factor(self, n_features: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(F (n_features, rank), s (n_features,)): the loadings and each feature's own noise scale."""
        generator = torch.Generator().manual_seed(self.seed)
        loadings = (torch.randn(n_features, self.rank, generator=generator) * self.scale).double()
        shared = loadings.pow(2).sum(1, keepdim=True)
        loadings = loadings * torch.where(shared > MAX_SHARED_VARIANCE, (MAX_SHARED_VARIANCE / shared).sqrt(), 1.0)
        own = (1 - loadings.pow(2).sum(1)).clamp_min(0).sqrt()
        return loadings.float().to(device), own.float().to(device)

    def __repr__(self) -> str:
        return f"LowRankCorrelation(rank={self.rank}, scale={self.scale:g}, seed={self.seed})"

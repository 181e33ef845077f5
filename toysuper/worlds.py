"""Preset worlds: SynthSAEBench (Chanin & Garriga-Alonso 2026, arXiv 2602.14687) from toysuper's pieces.

SynthSAEBench-16k (SAELens's `SyntheticModelConfig`, seed 42): 16,384 features in 768 dimensions; base
rates Zipf(0.5) from p_max = 0.4 to p_min = 5e-4; a forest of 128 roots, branching 4, depth 3, breadth
first, every parent's children mutually exclusive and scaled by the parent's activation over its mean; a
rank-25 Gaussian copula of scale 0.1; magnitudes ReLU(N(μ_i, σ_i²)) with μ linear from 5.0 (most frequent)
to 4.0 (rarest) and σ_i ~ |N(0.5, 0.5)|; a dictionary orthogonalised by 100 Adam steps at lr 3e-4; a
hidden bias of norm 0.5.

SAELens fires feature i raw with q_i = min(1, b_i / b_P (1 + Σ_{siblings j} b_j / b_P)) (b the base
rate, P the parent: its "probability compensation") and the value ReLU(N(μ_i, σ_i²)); level by level,
among a live parent's raw-active children one is kept uniformly at random and multiplied by the
parent's value over μ_P. The same law here, with every rate exact: a_i = q_i Φ(μ_i/σ_i) is the chance
of a non-zero raw value; a root or free feature fires with a_i and takes N(μ_i, σ_i²) conditioned on
> 0 (`TruncatedNormal`); given its parent fires, child c is the kept one with probability

    π_c = a_c E[1 / (1 + K_c)] = a_c ∫_0^1 Π_{j ≠ c} (1 - a_j + a_j t) dt,

K_c the number of c's raw-active siblings (Gauss-Legendre, exact for the polynomial). At most one
child is kept, so the π_c are one categorical draw (`Hierarchy(exclusive_children=True, child_prob=π)`)
and `firing_prob` holds every feature's exact rate (mean L0 34.5 in the 16k world).

Where this differs from SAELens: (1) the copula drives the roots and free features only; a child's
choice uses its own uniform, which keeps every rate exact (against SAELens's sampler the rates summed
per hierarchy level agree within 1.2 standard errors; single children of frequent roots differ by up to
about 25%). (2) A child is scaled by its parent's value over the parent's mean magnitude rather than
over μ_P (within 0.2% for σ_P < μ_P / 3). (3) Where ReLU zeros matter, the copula thresholds at a_i
directly rather than at q_i followed by independent silencing (the same rate, slightly different co-firing).
"""

from __future__ import annotations

import numpy as np
import torch

from .checks import finite_float, non_negative, positive_int
from .devices import resolve_device
from .sources import DictionarySource
from .truth.correlation import LowRankCorrelation
from .truth.dictionaries import orthogonalize, unit_rows
from .truth.distribution import FeatureDistribution
from .truth.frequencies import Zipf
from .truth.hierarchy import Hierarchy
from .truth.magnitudes import TruncatedNormal

N_FEATURES_16K, D_HIDDEN_16K, ROOTS_16K = 16384, 768, 128


def synthsaebench_16k(seed: int = 42, n_instances: int = 1, device=None, quiet: bool = True) -> DictionarySource:
    """SynthSAEBench-16k (the module docstring); several instances are SAEs on one world, each its own data."""
    return synthsaebench(N_FEATURES_16K, D_HIDDEN_16K, seed=seed, n_instances=n_instances, device=device, quiet=quiet)


WORLDS = {
    "synthsaebench_16k": (N_FEATURES_16K, D_HIDDEN_16K),
    "synthsaebench_4k": (4096, 192),  # the same structure at a quarter of the size, for CPUs
}
"""Named preset worlds, for configs (`source.world`): name -> (n_features, d_hidden) of `synthsaebench`."""


def named(name: str, seed: int = 42, n_instances: int = 1, device=None) -> DictionarySource:
    """The preset world `name` (a key of WORLDS)."""
    if name not in WORLDS:
        raise ValueError(f"world must be one of {sorted(WORLDS)}, got {name!r}")
    return synthsaebench(*WORLDS[name], seed=seed, n_instances=n_instances, device=device)


def synthsaebench(n_features: int = N_FEATURES_16K, d_hidden: int = D_HIDDEN_16K, *, seed: int = 42,
                  n_instances: int = 1, device=None, quiet: bool = True, orthogonalize_steps: int = 100,
                  orthogonalize_lr: float = 3e-4, bias_norm: float = 0.5, **settings) -> DictionarySource:
    """A SynthSAEBench world of any size as a `DictionarySource`; the defaults build SynthSAEBench-16k.

    seed: the dictionary and bias come from it, σ from seed + 1, the copula from seed + 4, as SAELens numbers
    them. n_instances: copies of the world side by side. settings: keywords of `synthsaebench_distribution`.
    """
    d_hidden = positive_int("d_hidden", d_hidden)
    device = resolve_device(device)
    steps = positive_int("orthogonalize_steps", orthogonalize_steps)
    lr = non_negative("orthogonalize_lr", orthogonalize_lr)
    bias_norm = non_negative("bias_norm", bias_norm)
    dist = synthsaebench_distribution(n_features, seed=seed, n_instances=n_instances, device=device, **settings)
    generator = torch.Generator().manual_seed(_seed(seed))  # on the CPU: the same world on every device
    start = torch.randn(n_features, d_hidden, generator=generator)
    bias = unit_rows(torch.randn(d_hidden, generator=generator)) * bias_norm
    directions = orthogonalize(start.to(device), steps, lr, quiet=quiet)
    return DictionarySource(directions, dist, bias=bias)


def synthsaebench_distribution(n_features: int = N_FEATURES_16K, *, seed: int = 42, n_instances: int = 1,
                               device=None, n_roots: int | None = None, branching: int = 4, depth: int = 3,
                               zipf_exponent: float = 0.5, p_max: float = 0.4, p_min: float = 5e-4,
                               correlation_rank: int = 25, correlation_scale: float = 0.1,
                               magnitude_mean: tuple[float, float] = (5.0, 4.0),
                               magnitude_std: tuple[float, float] = (0.5, 0.5)) -> FeatureDistribution:
    """The features of a SynthSAEBench world (no dictionary): firing, hierarchy, copula, magnitudes.

    n_roots scales with n_features by default (128 · n_features / 16384), so the hierarchy of a smaller
    world such as `synthsaebench(4096, 192)` covers the same two thirds of the features. magnitude_mean:
    (most frequent, rarest) μ, linear in between, both > 0. magnitude_std: the (mean, std) of the normal
    whose absolute values are the σ_i.
    """
    n_features = positive_int("n_features", n_features)
    seed = _seed(seed)
    if n_roots is None:
        n_roots = max(1, round(ROOTS_16K * n_features / N_FEATURES_16K))
    tree = Hierarchy.tree(n_roots, branching, depth, limit=n_features)
    base = Zipf(zipf_exponent, p_max=p_max, p_min=p_min).resolve(1, n_features, "cpu")[0].double()
    first, last = (finite_float("magnitude_mean", m) for m in magnitude_mean)
    if min(first, last) <= 0:
        raise ValueError(f"magnitude_mean must be two numbers > 0, got {magnitude_mean!r}")
    std_mean, std_std = (finite_float("magnitude_std", s) for s in magnitude_std)
    if std_std <= 0:
        raise ValueError(f"magnitude_std must be (mean, std) with std > 0, got {magnitude_std!r}")
    mean = torch.linspace(first, last, n_features)
    generator = torch.Generator().manual_seed(seed + 1)
    std = (std_mean + std_std * torch.randn(n_features, generator=generator)).abs().clamp_min(1e-6)
    live = torch.special.ndtr(mean.double() / std.double())  # P(ReLU(N(μ, σ²)) > 0)
    rates, child_prob = saelens_rates(tree, base, live)
    hierarchy = Hierarchy(tree.edges, exclusive_children=True, child_prob=child_prob.float(),
                          scale_children_by_parent=True)
    return FeatureDistribution(n_features, rates.float(), n_instances=n_instances,
                               magnitude=TruncatedNormal(mean, std), hierarchy=hierarchy,
                               correlation=LowRankCorrelation(correlation_rank, correlation_scale, seed=seed + 4),
                               device=device)


def saelens_rates(tree: Hierarchy, base: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SAELens's compensated hierarchy as exact rates (the module docstring): the tree's children taken as
    mutually exclusive, base (n,) rates b, live (n,) = Φ(μ/σ) -> (a (n,), the rate of roots and free
    features; π (n,) = P(child kept | parent fires), 0 for features without a parent)."""
    base, live = base.double(), live.double()
    nodes, weights = np.polynomial.legendre.leggauss(max(len(kids) for _, kids in tree.edges))
    t = torch.tensor((nodes + 1) / 2, dtype=torch.float64)  # Gauss-Legendre on [0, 1]
    w = torch.tensor(weights / 2, dtype=torch.float64)
    active = base.clamp(max=1) * live  # roots and free features: q is the base rate
    child_prob = torch.zeros_like(base)
    for parent, kids in tree.edges:
        kids = list(kids)
        raw = base[kids] / base[parent] * (1 + (base[kids].sum() - base[kids]) / base[parent])  # q, compensated
        a = raw.clamp(max=1) * live[kids]
        active[kids] = a
        factors = 1 - a[:, None] + a[:, None] * t  # (k, nodes): each sibling's generating function at t
        without = factors.prod(0) / factors  # Π over the other siblings (factors > 0 inside (0, 1))
        child_prob[kids] = a * (without * w).sum(1)
    return active, child_prob


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    return seed

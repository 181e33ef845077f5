"""Fixed feature directions for `DictionarySource`: random or low-coherence (or any (n_features, d_hidden)
or (inst, n_features, d_hidden) tensor of one's own).

How hard an SAE's job is depends on how much the directions overlap; the coherence
μ = max_{i≠j} |cos(d_i, d_j)| measures it. No n > d unit vectors in R^d have μ below the Welch bound
sqrt((n - d) / (d (n - 1))) (Welch 1974).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..checks import non_negative, positive_int
from ..devices import make_generator, resolve_device
from ..progress import progress_bar


class Dictionary(NamedTuple):
    """Directions with the overlap they achieved."""

    directions: torch.Tensor
    """Unit rows, (inst, n_features, d_hidden)."""
    max_abs_cos: torch.Tensor
    """Achieved coherence max_{i≠j} |cos(d_i, d_j)| per instance, (inst,)."""
    welch_bound: float
    """The least coherence any n unit vectors in R^d can have (0 when n <= d)."""


def unit_rows(directions: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; zero rows stay zero."""
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_directions(n_features: int, d_hidden: int, n_instances: int = 1, seed: int | None = 0,
                      device=None) -> torch.Tensor:
    """Random unit directions, uniform on the sphere: (inst, n_features, d_hidden)."""
    n_features, d_hidden = positive_int("n_features", n_features), positive_int("d_hidden", d_hidden)
    n_instances, device = positive_int("n_instances", n_instances), resolve_device(device)
    generator = make_generator(seed, device)
    return unit_rows(torch.randn(n_instances, n_features, d_hidden, generator=generator, device=device))


def max_abs_cos(directions: torch.Tensor) -> torch.Tensor:
    """Coherence max_{i≠j} |cos(d_i, d_j)|: (inst, n, d) -> (inst,); (n, d) -> a 0-d tensor."""
    unit = unit_rows(directions)
    cos = (unit @ unit.transpose(-1, -2)).abs()
    cos.diagonal(dim1=-2, dim2=-1).zero_()
    return cos.amax(dim=(-2, -1))


def welch_bound(n_features: int, d_hidden: int) -> float:
    """sqrt((n - d) / (d (n - 1))) for n > d, else 0 (Welch 1974)."""
    if n_features <= d_hidden:
        return 0.0
    return math.sqrt((n_features - d_hidden) / (d_hidden * (n_features - 1)))


def orthogonalize(directions: torch.Tensor, steps: int = 100, lr: float = 3e-4, quiet: bool = True) -> torch.Tensor:
    """SynthSAEBench's dictionary step (Chanin & Garriga-Alonso 2026; SAELens's `orthogonalize_embeddings`):
    from unit rows D (n, d), `steps` of Adam at `lr` on

        L(D) = Σ_{i≠j} (d_i · d_j)² + n Σ_i (||d_i||² - 1)²,

    then rows scaled back to unit norm. The off-diagonal sum is ||DᵀD||_F² - Σ_i ||d_i||⁴: a d × d Gram
    matrix, O(n d²), instead of the n × n one.
    """
    steps, lr = positive_int("steps", steps), non_negative("lr", lr)
    if directions.ndim != 2:
        raise ValueError(f"directions must be (n_features, d_hidden), got shape {tuple(directions.shape)}")
    x = unit_rows(directions.float()).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    n_features = x.shape[0]
    for _ in progress_bar(range(steps), desc="orthogonalize", quiet=quiet):
        squared_norms = x.pow(2).sum(1)
        off_diagonal = (x.T @ x).pow(2).sum() - squared_norms.pow(2).sum()
        loss = off_diagonal + n_features * (squared_norms - 1).pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return unit_rows(x.detach())


def low_coherence_directions(n_features: int, d_hidden: int, n_instances: int = 1, seed: int | None = 0,
                             steps: int = 1000, lr: float = 0.01, device=None, quiet: bool = True) -> Dictionary:
    """Unit directions spread to overlap as little as gradient descent can make them.

    With n <= d the rows are orthonormal (QR of random directions). Otherwise, from random directions,
    Adam minimises a soft maximum of the squared cosines, (1/β) log Σ_{i≠j} exp(β cos²_ij), sharpening β
    from 5 to 200 so that the largest overlaps dominate, and keeps each instance's best iterate: typically
    within 1.3x of the Welch bound (random directions: several times it). Memory and time grow as n².
    """
    n_features = positive_int("n_features", n_features)
    d_hidden = positive_int("d_hidden", d_hidden)
    steps, lr = positive_int("steps", steps), non_negative("lr", lr)
    start = random_directions(n_features, d_hidden, n_instances, seed, device)
    bound = welch_bound(n_features, d_hidden)
    if n_features <= d_hidden:
        q, _ = torch.linalg.qr(start.transpose(-1, -2))  # (inst, d, n) with orthonormal columns
        directions = q.transpose(-1, -2).contiguous()
        return Dictionary(directions, max_abs_cos(directions), bound)
    x = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    off_diagonal = ~torch.eye(n_features, dtype=torch.bool, device=start.device)
    best, best_coherence = start.clone(), max_abs_cos(start)
    for step in progress_bar(range(steps), desc="low coherence", quiet=quiet):
        unit = unit_rows(x)
        squared = (unit @ unit.transpose(-1, -2)).pow(2)[:, off_diagonal]
        beta = 5.0 + 195.0 * step / max(steps - 1, 1)
        loss = (torch.logsumexp(beta * squared, dim=-1) / beta).sum()  # instances are independent
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            current = unit_rows(x)
            coherence = max_abs_cos(current)
            better = coherence < best_coherence
            best[better] = current[better]
            best_coherence = torch.minimum(coherence, best_coherence)
    return Dictionary(best, best_coherence, bound)

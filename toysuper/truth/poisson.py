"""Independent rare features drawn sparsely with a fixed budget: Poissonisation.

Feature j of P fires in each row with probability p_j, independently. Give it the rate
μ_j = -log(1 - p_j) and lay the rates end to end: row r of a batch of B owns [rΛ, (r+1)Λ),
Λ = Σ_j μ_j, and inside it feature j owns [C_{j-1}, C_j), C_j = μ_1 + ... + μ_j. A Poisson process of
rate 1 on [0, BΛ) puts independent Poisson numbers of points in disjoint intervals, with means their
lengths (Kingman 1993, "Poisson Processes", §2.2), so (row r, feature j) holds at least one point with
probability 1 - exp(-μ_j) = p_j, independently of every other cell: firing iff a cell holds a point is
exactly the Bernoulli grid.

The points are partial sums of exponential gaps, T_k = E_1 + ... + E_k with E = -log(1 - U), so only
uniforms are drawn. Their number N ~ Poisson(BΛ) varies; a draw keeps a fixed `budget` K of gaps with
P(N > K) < 1e-12, so its shapes come from the configuration alone: slots past the last point land past
the batch, and the rare loss of points past the K-th is counted (`overflow`). The points come in
increasing order, so a cell hit twice shows up in adjacent slots and all but the first are dropped.

A point's feature is found in the table C by a guide table (Chen & Asau 1974), a fixed number of
gathers: cut [0, Λ) into L equal buckets, guide[b] = #{j : C_j <= bΛ/L}; a point t in bucket b belongs
to feature guide[b] + #{s < S : C_{guide[b]+s} <= t}, S the most boundaries inside one bucket.
"""

from __future__ import annotations

import bisect
import math
from typing import NamedTuple

import torch
from scipy.special import pdtrc

TAIL = 1e-12  # budgets are sized so that a draw overflows with at most this probability


def budget(mean: float, tail: float = TAIL) -> int:
    """The least k with P(Poisson(mean) > k) < tail (at least 1)."""
    if mean <= 0:
        return 1
    high = int(mean + 10 * math.sqrt(mean) + 40)
    while pdtrc(high, mean) >= tail:
        high *= 2
    # pdtrc(k, mean) = P(N > k) falls as k grows: the first k below the tail, by bisection
    return max(bisect.bisect_left(range(high), True, key=lambda k: pdtrc(k, mean) < tail), 1)


class PoissonTable(NamedTuple):
    """The Poisson part of a distribution, per instance; padded entries never fire."""

    feature: torch.Tensor | None
    """(inst, P) long: the global feature index of each unit; None when unit j is feature j everywhere."""
    bounds: torch.Tensor
    """(inst, P + S) float64: the cumulative rates C_1..C_P, then +inf."""
    guide: torch.Tensor
    """(inst, L) long: the first unit of each bucket."""
    row_rate: torch.Tensor
    """(inst, 1) float64: Λ, the expected number of points per row."""
    steps: int
    """S: the most boundaries inside one bucket."""
    neg_inv_unit_rate: torch.Tensor | None
    """(inst, 1) float64: -1/μ where every unit of each instance shares one rate μ (no search needed), else None."""
    n_units: torch.Tensor
    """(inst, 1) float64: each instance's number of units."""
    n_features: int
    """The distribution's feature count (for each event's index into the (batch + 1) x n_features grid)."""


def build_table(rates: list[torch.Tensor], features: list[torch.Tensor], device, n_features: int | None = None
                ) -> PoissonTable:
    """Tables for one list of (rates p, global feature indices) per instance, p in [0, 1); n_features:
    the distribution's (the largest index + 1 by default)."""
    n_units = max(1, max(len(f) for f in features))
    n_buckets = 2 * n_units
    bounds, guides, totals, steps, unit_rates = [], [], [], 1, []
    for p in rates:
        mu = -torch.log1p(-p.double().cpu())
        cumulative = torch.cumsum(mu, 0)
        total = float(cumulative[-1]) if len(cumulative) else 0.0
        if total == 0:
            raise ValueError("poisson.build_table: every instance needs a unit that can fire (leave the others out)")
        guide = torch.searchsorted(cumulative, torch.arange(n_buckets + 1, dtype=torch.float64) * (total / n_buckets),
                                   right=True)
        steps = max(steps, int(guide.diff().max()))
        bounds.append(cumulative)
        guides.append(guide[:-1])
        totals.append(total)
        unit_rates.append(float(mu[0]) if bool((mu == mu[0]).all()) else None)
    feature = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)  # (a padded unit: feature 0)
    identity = all(len(f) == n_units for f in features) and bool((feature == torch.arange(n_units)).all())
    bounds = torch.nn.functional.pad(torch.nn.utils.rnn.pad_sequence(bounds, batch_first=True, padding_value=math.inf),
                                     (0, steps), value=math.inf)
    one_rate = None if None in unit_rates else -1 / torch.tensor(unit_rates, dtype=torch.double, device=device)[:, None]
    return PoissonTable(None if identity else feature.to(device), bounds.to(device), torch.stack(guides).to(device),
                        torch.tensor(totals, dtype=torch.float64, device=device)[:, None], steps, one_rate,
                        torch.tensor([len(f) for f in features], dtype=torch.float64, device=device)[:, None],
                        n_units if n_features is None else n_features)


class Events(NamedTuple):
    """Where the points of a Poisson draw landed, one slot per point; (inst, K) each."""

    place: torch.Tensor
    """long: row · n_features + feature, the point's place in a (batch + 1, n_features) grid whose last
    row, past the batch, takes the unused slots (places never decrease along the slots)."""
    keep: torch.Tensor
    """float 0/1: 1 for the first point of each (row, feature), 0 for repeats (unused slots land in the
    spare row, whatever their keep)."""
    overflow: torch.Tensor
    """(inst,) float: 1 where the budget may have cut points off (P < 1e-12 per draw)."""


def events(uniforms: torch.Tensor, table: PoissonTable, batch_size: int) -> Events:
    """Land the points whose gaps are -log(1 - uniforms), (inst, K), on the batch's cells.

    A pure, fixed-shape transform (the module docstring proves the draw exact). Masks are kept as
    0/1 floats: this CPU runs float arithmetic several times faster than bool kernels.
    """
    n_units, n_features = table.bounds.shape[1] - table.steps, table.n_features
    # S_k = Σ log(1 - U) = -T_k: the points' times, negated (1 - U lies in (0, 1], so all finite)
    neg_times = torch.cumsum(uniforms.neg().log1p_(), dim=-1, dtype=torch.float64)
    if table.neg_inv_unit_rate is not None:  # one rate μ per instance: the cell row·P + unit is ⌊T/μ⌋
        # cell arithmetic in float32 when every cell index is below 2^24 (exact there, and half the traffic)
        exact = torch.float32 if (batch_size + 2) * max(n_units, n_features) < 2 ** 24 else torch.float64
        cell = torch.floor(neg_times * table.neg_inv_unit_rate).to(exact)
        inside_last = cell[:, -1:] < table.n_units * batch_size
        if table.feature is None and n_units == n_features:  # units are the features: the cell is the place
            place = cell
        else:
            per_row = table.n_units.to(exact)
            row = torch.floor(cell / per_row).clamp_(max=batch_size)
            unit = (cell - row * per_row).clamp_(max=n_units - 1)
            feature = unit if table.feature is None else table.feature.gather(1, unit.long()).to(exact)
            place = row * n_features + feature
    else:
        times, rate = neg_times.neg_(), table.row_rate
        row = torch.floor(times / rate).clamp_(max=batch_size)
        t = times - row * rate  # the point's place inside its row
        n_buckets = table.guide.shape[1]
        first = table.guide.gather(1, (t * (n_buckets / rate)).clamp_(0, n_buckets - 1).long())
        candidates = first.unsqueeze(-1) + torch.arange(table.steps, device=first.device)
        passed = table.bounds.gather(1, candidates.flatten(1)).view_as(candidates) <= t.unsqueeze(-1)
        unit = (first + passed.sum(-1)).clamp_(max=n_units - 1)
        feature = unit if table.feature is None else table.feature.gather(1, unit)
        place = row * n_features + feature
        inside_last = row[:, -1:] < batch_size
    # places never decrease along the slots: a repeat is a zero step
    keep = torch.ones_like(place, dtype=torch.float32)
    keep[:, 1:] = (place[:, 1:] - place[:, :-1]).clamp_(max=1)
    spare = (batch_size + 1) * n_features - 1
    return Events(place.clamp_(max=spare).long(), keep, inside_last[:, 0].float())


def rows_and_features(place: torch.Tensor, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, feature) of each event from its place row · n_features + feature: two long (inst, K)."""
    row = torch.div(place, n_features, rounding_mode="floor")
    return row, place - row * n_features


def row_starts(row: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's events begin among the slots, and how many it has: (inst, batch + 1) each.

    `row` (inst, K) is non-decreasing (events come in order); entry batch_size gathers the unused slots.
    """
    counts = torch.zeros(row.shape[0], batch_size + 1, dtype=torch.long, device=row.device)
    counts.scatter_add_(1, row, torch.ones_like(row))
    return counts.cumsum(1) - counts, counts

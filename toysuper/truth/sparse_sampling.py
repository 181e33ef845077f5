"""Drawing which features fire at a cost that grows with how many fire, not with batch × features.

A dense draw of 4,096 samples × 16,384 features makes 67 M uniforms per batch to find the
~120 k that fire at L0 = 30. Here each Bernoulli column is walked by geometric gaps
instead: for a unit firing with probability r, the number of misses before the next hit
is ⌊log U / log(1 - r)⌋ (U uniform), so the hits of a column come out in order, with no
duplicates, from about as many uniforms as there are hits (Devroye 1986, "Non-Uniform
Random Variate Generation", ch. 10: sampling Bernoulli sequences by skipping). Columns
that fire more often than `dense_above` are cheaper to draw densely and are.
"""

from __future__ import annotations

import torch

DENSE_ABOVE = 0.5  # columns firing at least this often are drawn densely: that costs < 2 uniforms per hit

# What a draw costs, counted in the uniforms of a dense draw (about 2 ns each on 2 CPU threads),
# as measured by benchmarks/sampling_crossover.py: a walked hit costs about 4 when every walked
# column shares one rate (one run of gaps), about 13 otherwise (per-column bookkeeping), and a
# walk has a fixed cost of about 20,000 (a dozen small ops), which rules it out for small batches.
HIT_COST_ONE_RATE = 4.0
HIT_COST = 13.0
WALK_OVERHEAD = 20_000.0

# Gaps come from float32 uniforms (1.5× faster to draw, 2× to take the log of) when every walked
# rate r is at least this. A uniform on the 2^-24 grid then gives the same gap as an exact one
# except with probability below 1e-6 / r <= 2.6e-4 per gap, and then one position off.
FLOAT32_GAPS_FROM = 1 / 256


def joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat(parts), without the copy when there is only one part (the common case here)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def split_index(flat: torch.Tensor, n: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat // n, flat % n) for a long tensor of values in [0, end).

    Done in float64 when end <= 2^50: torch's CPU int64 division is scalar, and these passes take
    half its time. (flat + 0.5) / n then sits at least 0.5 / n from an integer, far beyond
    float64's rounding error there.
    """
    if end > 2 ** 50:
        return flat // n, flat % n
    quotient = flat.double().add_(0.5).mul_(1.0 / n).floor_().long()
    return quotient, flat - quotient * n


class BernoulliColumns:
    """Independent Bernoulli(rates[u]) for each unit u and each sample of a batch, drawn as hits.

    Args:
        rates: (U,) probabilities in [0, 1].
        sparse: walk the columns firing at most `dense_above` by geometric gaps; False
            draws every column densely (one uniform per sample and column).

    The layout of the first round of gaps depends only on the batch size and is kept
    between calls, so a training loop pays for it once.
    """

    spare_sigmas = 4.0  # gaps drawn per column: expected hits + spare_sigmas·sqrt(expected) + spare_gaps
    spare_gaps = 2

    def __init__(self, rates: torch.Tensor, sparse: bool = True, dense_above: float = DENSE_ABOVE):
        rates = rates.double().flatten()
        self.device = rates.device
        dense = rates > (dense_above if sparse else 0.0)
        self.dense_units = dense.nonzero().squeeze(1)
        self.dense_rates = rates[self.dense_units].float()
        self.walked_units = ((rates > 0) & ~dense).nonzero().squeeze(1)
        self.walked_rates = rates[self.walked_units]
        self._gap_dtype = torch.float32 if len(self.walked_rates) and float(self.walked_rates.min()) >= \
            FLOAT32_GAPS_FROM else torch.float64
        self.log_miss = torch.log1p(-self.walked_rates).to(self._gap_dtype)
        self._one_rate = bool(len(self.walked_rates)) and bool((self.walked_rates == self.walked_rates[0]).all())
        self._walked_rate_sum = float(self.walked_rates.sum())  # expected walked hits per sample
        # every column walked (the usual case): a walked column's index is its unit, no lookup needed
        self._walks_all = len(self.walked_units) == len(rates)
        self._layouts: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def hits(self, batch_size: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit, sample): two (hits,) long tensors, each (unit, sample) pair at most once."""
        units, samples = [], []
        if self.dense_units.numel():
            fires = torch.rand(batch_size, len(self.dense_units), generator=generator, device=self.device) \
                < self.dense_rates
            sample, column = fires.nonzero(as_tuple=True)
            units.append(self.dense_units[column])
            samples.append(sample)
        if self.walked_units.numel():
            column, sample = self._walk(batch_size, generator)
            units.append(column if self._walks_all else self.walked_units[column])
            samples.append(sample)
        if not units:
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            return empty, empty
        return joined(units), joined(samples)

    def cost(self, batch_size: int) -> float:
        """Expected cost of `hits(batch_size)`, in uniforms of a dense draw (see HIT_COST above)."""
        if not self.walked_units.numel():
            return float(batch_size * len(self.dense_units))
        per_hit = HIT_COST_ONE_RATE if self._one_rate else HIT_COST
        return batch_size * (len(self.dense_units) + per_hit * self._walked_rate_sum) + WALK_OVERHEAD

    def _layout(self, columns: torch.Tensor, start: torch.Tensor, batch_size: int):
        """How many gaps to draw per column (enough to pass the batch's end nearly always), as
        (owner of each gap, log(1 - r) of each gap, end of each column's run of gaps)."""
        expected = (batch_size - start) * self.walked_rates[columns]
        n_gaps = (expected + self.spare_sigmas * expected.sqrt()).ceil().long() + self.spare_gaps
        owner = torch.repeat_interleave(torch.arange(len(columns), device=self.device), n_gaps)
        return owner, self.log_miss[columns][owner], n_gaps.cumsum(0)

    def _walk(self, batch_size: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Hits of the walked columns over positions 0..batch_size-1 (their rates lie in (0, 1))."""
        if self._one_rate:
            return self._walk_as_one(batch_size, generator)
        columns = torch.arange(len(self.walked_units), device=self.device)
        start = torch.zeros(len(columns), dtype=torch.long, device=self.device)
        if batch_size not in self._layouts:
            self._layouts = {batch_size: self._layout(columns, start, batch_size)}
        owner, log_miss, ends = self._layouts[batch_size]
        found_columns, found_positions = [], []
        while True:
            steps = self._steps(log_miss, batch_size, generator)
            total = steps.cumsum(0)
            before = torch.cat([total.new_zeros(1), total[ends[:-1] - 1]])
            position = start[owner] + total - before[owner] - 1
            inside = position < batch_size
            found_columns.append(columns[owner[inside]])
            found_positions.append(position[inside])
            last = position[ends - 1]
            short = last < batch_size - 1  # gaps ran out before the batch ended: go on after the last hit
            if not short.any():
                return joined(found_columns), joined(found_positions)
            columns, start = columns[short], last[short] + 1
            owner, log_miss, ends = self._layout(columns, start, batch_size)

    def _walk_as_one(self, batch_size: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`_walk` when every walked column fires at the same rate: the (sample, column) grid is then
        one Bernoulli sequence, walked sample by sample in a single run of gaps. No per-column
        bookkeeping, and the hits come out sorted by sample, as the consumers of a batch want."""
        n_columns = len(self.walked_units)
        end = batch_size * n_columns
        rate, log_miss = float(self.walked_rates[0]), self.log_miss[0]
        found, start = [], 0
        while start < end:
            expected = (end - start) * rate
            n_gaps = int(expected + self.spare_sigmas * expected ** 0.5) + 1 + self.spare_gaps
            steps = self._steps(log_miss.expand(n_gaps), end, generator)
            position = steps.cumsum_(0).add_(start - 1)  # ascending, so the hits inside are a prefix
            found.append(position[:int(torch.searchsorted(position, end))])
            start = int(position[-1]) + 1  # past the end unless the gaps ran out first
        sample, column = split_index(joined(found), n_columns, end)
        return column, sample

    def _steps(self, log_miss: torch.Tensor, limit: int, generator) -> torch.Tensor:
        """One geometric gap per entry of log_miss = log(1 - r), plus one: the steps from one hit to the
        next, floor(log U / log(1 - r)) + 1, each at most limit + 1."""
        u = torch.rand(log_miss.shape, dtype=self._gap_dtype, generator=generator, device=self.device)
        # 1 - u lies in (0, 1]: no log(0), whose infinite gap would end a float32 walk 1 time in 2^24
        return (torch.log(u.neg_().add_(1)) / log_miss).clamp_(max=limit).long() + 1


def expand_segments(segment: torch.Tensor, ptr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each event in `segment` (k,), every item of its segment ptr[s]:ptr[s+1].

    Returns (event, item): event indexes `segment`, item indexes the CSR item array.
    """
    counts = (ptr[segment + 1] - ptr[segment])
    event = torch.repeat_interleave(torch.arange(len(segment), device=segment.device), counts)
    offset = torch.arange(len(event), device=segment.device) - (counts.cumsum(0) - counts)[event]
    return event, ptr[segment][event] + offset


def pick_in_segments(instance: torch.Tensor, segment: torch.Tensor, ptr: torch.Tensor, weights: torch.Tensor,
                     generator=None, always: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each event, at most one item of its segment: item j with probability weights[instance, j].

    Args:
        instance, segment: (k,) per event.
        ptr: (S+1,) segment bounds into the CSR item array of length T.
        weights: (inst, T) probabilities; each segment's sum <= 1. With `always`, the
            segment sums are 1 and one item is always picked (rounding cannot leave it empty).

    Returns:
        (event, item): the events that picked an item and the item (CSR index) each picked.
    """
    n_items = weights.shape[1]
    # one cumulative sum over all instances' items; an event searches only inside its own segment
    edges = torch.cat([weights.new_zeros(1), weights.double().flatten().cumsum(0)])
    low = instance * n_items + ptr[segment]
    high = instance * n_items + ptr[segment + 1]
    u = torch.rand(len(segment), dtype=torch.float64, generator=generator, device=segment.device)
    target = edges[low] + u
    flat = torch.searchsorted(edges, target, right=True) - 1
    if always:
        flat = torch.minimum(flat, high - 1)
    picked = flat < high
    event = picked.nonzero().squeeze(1)
    return event, flat[event] - instance[event] * n_items

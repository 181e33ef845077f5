"""Which latents a TopK-family code keeps: the entries (row, latent, keep) that sparse.code_at scores.

Every selection returns N entries, N fixed by the configuration, rows instance-major and ascending
(row = instance · batch + sample), with a 0/1 `keep` per entry (an entry not kept scores 0):
    top_k:       each row's k largest pre-activations (Gao et al. 2024);
    batch_top_k: each instance's k·batch largest pre-activations over the whole batch (Bussmann et al. 2024);
    aux_k:       each row's k_aux largest pre-activations among the dead latents (Gao et al. 2024, AuxK).
The pre-activations come without autograd (they only choose); entries are scored afresh with it.

The CPU paths. torch.topk over a whole batch costs far more on 2 CPU cores than the rest of a step
(benchmarks/run.py, "selection": batch top-k 8,192 of 1,048,576 entries, topk against the guessed cut
below; AuxK's topk over all latents against the dead ones), while reading a count back from the CPU is
free. So an eager step on the CPU (TrainState.fixed_shapes False) may size two selections to the data:
BatchTopK's cut is guessed on a subsample and finished over the entries above the guess, and AuxK
looks at the dead latents only (`dead_block`), skipping its topk when no row has more than k_aux
candidates, and is then computed densely over those columns (recipes/auxk.py). Both keep exactly what
the fixed-shape path keeps (tests/test_sparse_codes.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _rows(n_instances: int, batch: int, per_row: int, device) -> torch.Tensor:
    """(inst·batch·per_row,) row of each entry when every row has `per_row` entries."""
    return torch.arange(n_instances * batch, device=device).repeat_interleave(per_row)


def top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's k[i] largest entries of pre (batch, inst, d_sae), instance i; k_max = max(k).

    Returns (rows, latents, keep), each (inst·batch·k_max,).
    """
    batch, n_instances, _ = pre.shape
    latents = pre.transpose(0, 1).topk(k_max, dim=-1).indices  # (inst, batch, k_max)
    keep = (torch.arange(k_max, device=pre.device) < k[:, None, None]).expand_as(latents)
    return _rows(n_instances, batch, k_max, pre.device), latents.reshape(-1), keep.reshape(-1).float()


def batch_top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int, fixed_shapes: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per instance i, the k[i]·batch largest entries of pre (batch, inst, d_sae) over the whole batch.

    Returns (rows, latents, keep), each (inst·k_max·batch,), sorted by row then latent. Ties at the cut
    are broken by torch.topk (the CPU path keeps the lowest positions among equal scores).
    """
    batch, n_instances, d_sae = pre.shape
    flat = pre.transpose(0, 1).reshape(n_instances, batch * d_sae)
    count = k_max * batch
    chosen = None if fixed_shapes or pre.device.type != "cpu" else _cut_from_a_guess(flat, k * batch, count)
    if chosen is None:
        order = flat.topk(count, dim=-1).indices  # (inst, count), largest first
        keep = (torch.arange(count, device=pre.device) < (k * batch)[:, None])
        positions, by_position = order.sort(dim=-1)
        keep = keep.gather(-1, by_position)
    else:
        positions, keep = chosen
    rows = positions // d_sae + (torch.arange(n_instances, device=pre.device) * batch)[:, None]
    return rows.reshape(-1), (positions % d_sae).reshape(-1), keep.reshape(-1).float()


def aux_k(pre: torch.Tensor, dead: torch.Tensor, k_aux: torch.Tensor, k_aux_max: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's k_aux[i] largest positive entries of pre (batch, inst, d_sae) among the dead latents
    (dead: bool (inst, d_sae)), fixed-shape: (rows, latents, keep), k_aux_max entries a row."""
    batch, n_instances, d_sae = pre.shape
    masked = pre.transpose(0, 1).masked_fill(~dead[:, None, :], -torch.inf)  # (inst, batch, d_sae)
    width = min(k_aux_max, d_sae)
    top, index = masked.topk(width, dim=-1)  # (inst, batch, width)
    keep = (torch.arange(width, device=pre.device) < k_aux[:, None, None]) & (top > 0)
    return _rows(n_instances, batch, width, pre.device), index.reshape(-1), keep.reshape(-1).float()


def dead_block(pre: torch.Tensor, dead: torch.Tensor, k_aux: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """aux_k's CPU path, as a dense block over the dead latents' columns only (their count read back):
    (columns (inst, width), keep (inst, batch, width) 0/1), width = the most dead latents of an instance
    (an instance with fewer pads with columns it does not keep), or None when nothing is dead. keep marks
    exactly the entries aux_k keeps; the topk is skipped when no row has more than k_aux candidates."""
    batch, n_instances, d_sae = pre.shape
    n_dead = dead.sum(-1)
    width = int(n_dead.max())
    if width == 0:
        return None
    columns = torch.sort(dead.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :width]
    valid = torch.arange(width, device=pre.device) < n_dead[:, None]  # (inst, width)
    scores = pre.transpose(0, 1).gather(2, columns[:, None, :].expand(-1, batch, -1))  # (inst, batch, width)
    keep = (scores > 0) & valid[:, None, :]
    if bool((keep.sum(-1) > k_aux[:, None]).any()):  # some row must choose its k_aux largest
        top, index = scores.masked_fill(~valid[:, None, :], -torch.inf).topk(min(int(k_aux.max()), width), dim=-1)
        chosen = (torch.arange(index.shape[-1], device=pre.device) < k_aux[:, None, None]) & (top > 0)
        keep = torch.zeros_like(keep).scatter_(2, index, chosen)
    return columns, keep.float()


SUBSAMPLE_STRIDE = 61
"""The batch-wide cut is guessed on every 61st entry: prime, so the subsample runs through every
latent rather than a few fixed columns."""

GUESS_MARGIN = 4.0
"""How far below the expected rank of the true cut in the subsample the guess is taken, in standard
deviations (the count above the cut is close to Poisson). At k·batch = 8,192 the subsample holds
134 ± 12 entries above the true cut and the guess is its 181st largest: about 11,000 candidates are
ranked, and the guess lands above the true cut (the whole row is then ranked by topk) with
probability about 10⁻⁴."""

_ORDERED_INTEGERS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _cut_from_a_guess(flat: torch.Tensor, counts: torch.Tensor, count_max: int):
    """`batch_top_k`'s CPU path: (positions (inst, count_max), keep (inst, count_max)), or None.

    The cut is guessed on every SUBSAMPLE_STRIDE-th entry, GUESS_MARGIN standard deviations below where
    the true cut should fall, so that it lies below the true cut with near certainty; only the positive
    entries above the guess are ranked, in numpy, on the floats' bit patterns read as integers (positive
    floats order like their bits; bf16 scores need no conversion). None when the guess fails (fewer than
    counts[i] positive entries above it) or does not help: the caller then ranks everything with topk.
    """
    rows, n = flat.shape
    expected = count_max / SUBSAMPLE_STRIDE
    rank = math.ceil(expected + GUESS_MARGIN * math.sqrt(expected)) + 1
    if flat.dtype not in _ORDERED_INTEGERS or rank >= (n // SUBSAMPLE_STRIDE) // 2:
        return None
    scores = flat.contiguous().view(_ORDERED_INTEGERS[flat.dtype]).numpy()  # (inst, n)
    guess = np.partition(scores[:, ::SUBSAMPLE_STRIDE], -rank, axis=-1)[:, -rank:][:, :1]  # each row's rank-th largest
    index = np.flatnonzero(scores >= np.maximum(guess, 1))  # ascending: by row, then position; positive only
    row = index // n
    per_row = np.bincount(row, minlength=rows)
    counts = counts.cpu().numpy()
    if (per_row < counts).any() or per_row.max() > n // 4:
        return None
    positions = np.zeros((rows, count_max), dtype=np.int64)
    keep = np.zeros((rows, count_max), dtype=bool)
    start = 0
    for i, (size, count) in enumerate(zip(per_row, counts)):
        found = index[start:start + size] - i * n
        values = scores[i, found]
        top = np.sort(np.argpartition(-values, count - 1)[:count]) if count < size else np.arange(size)
        kept = found[top]  # ascending positions of the count largest
        positions[i, :count] = kept
        positions[i, count:] = kept[-1]  # padding after the last kept entry keeps the positions sorted
        keep[i, :count] = True
        start += size
    return torch.from_numpy(positions), torch.from_numpy(keep)

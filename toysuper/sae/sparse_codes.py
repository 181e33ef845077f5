"""Sparse latent codes: training TopK-style SAEs at a cost set by the kept latents.

A TopK or BatchTopK SAE keeps about k of its d_sae latents per sample, so most of a dense
step's arithmetic multiplies zeros: decoding (W_dec z) and every backward product except the
encoder's forward pass. Here the code is held as a list of (row, latent, value) entries:
    select:   π = W_enc (x - b_dec) + b_enc densely, to choose which latents survive;
    re-score: the kept pre-activations are recomputed from the gathered encoder columns,
              π_e = x̄_row · W_enc[:, latent] + b_enc[latent], so the backward pass touches
              only the kept columns (π itself then receives no gradient);
    decode:   x̂_row = Σ_e z_e W_dec[latent_e] + b_dec, an index_add over the entries.
Gathers cost far more per multiply-add than a matmul, so this wins only while few latents are
kept per row: with more than d_sae / SPARSE_BELOW per row (AuxK's k_aux = 64 on a narrow SAE,
say) the same code is computed densely instead, gathering the values from π with autograd and
decoding with a matmul. Either way the values, losses and gradients equal the dense
formulation's (up to the order of floating-point sums); tests/test_sparse_codes.py checks it.

A row is one (sample, instance) pair, flattened as sample·n_instances + instance; a latent
index is flattened as instance·d_sae + latent, so every instance's weights are addressed in
one gather.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SparseCode(NamedTuple):
    """Entries of a batch of latent codes; entries with value 0 carry nothing (padding)."""

    rows: torch.Tensor
    """(n,) flattened (sample, instance): sample · n_instances + instance."""
    latents: torch.Tensor
    """(n,) flattened (instance, latent): instance · d_sae + latent."""
    values: torch.Tensor
    """(n,) activations, ≥ 0."""
    shape: tuple[int, int, int]
    """(batch, inst, d_sae) of the dense code."""
    sparse: bool = True
    """Whether decoding should use the entries (few per row) or a dense matmul (many)."""

    def to_dense(self) -> torch.Tensor:
        """The dense code, (batch, inst, d_sae); differentiable in `values`."""
        batch, n_instances, d_sae = self.shape
        flat = self.rows * d_sae + self.latents % d_sae  # rows already hold sample · n_instances + instance
        dense = torch.zeros(batch * n_instances * d_sae, device=self.values.device, dtype=self.values.dtype)
        return dense.index_add(0, flat, self.values).view(self.shape)

    def l0(self) -> torch.Tensor:
        """Mean number of non-zero latents per sample, (inst,)."""
        batch, n_instances, _ = self.shape
        instance = self.rows % n_instances
        counts = torch.zeros(n_instances, device=self.values.device).index_add(0, instance, (self.values > 0).float())
        return counts / batch

    def fired(self) -> torch.Tensor:
        """Which latents fired anywhere in the batch, bool (inst, d_sae)."""
        _, n_instances, d_sae = self.shape
        fired = torch.zeros(n_instances * d_sae, device=self.values.device)
        fired.index_add_(0, self.latents, (self.values > 0).float())
        return (fired > 0).view(n_instances, d_sae)


SPARSE_BELOW = 32
"""Sparse arithmetic while at most d_sae / SPARSE_BELOW latents are kept per row. Measured on a
2-core CPU at batch 1024, d_hidden 128, d_sae 1024: decoding plus its backward costs 3.5 ms
sparse vs 10 ms dense at 8 per row, 13 vs 10 at 32, 56 vs 10 at 64."""


def is_sparse(per_row: float, d_sae: int) -> bool:
    """Whether keeping `per_row` latents of `d_sae` per row is few enough for sparse arithmetic."""
    return per_row * SPARSE_BELOW <= d_sae


def top_k_code(sae, x_centred: torch.Tensor, pre: torch.Tensor, k: torch.Tensor, k_max: int,
               candidates: torch.Tensor | None = None) -> SparseCode:
    """Each row keeps its k[i] largest entries of `pre` (instance i), ReLU'd.

    x_centred: (batch, inst, d_hidden), the encoder's input x - b_dec; pre: (batch, inst, d_sae),
    its pre-activations (with autograd: the dense path takes its gradient through them);
    k: (inst,) whole numbers, k_max = max(k). candidates: optional scores to rank by instead of
    `pre` (AuxK ranks dead latents only); entries ranked past k[i], or whose score is negative,
    get value 0.
    """
    batch, n_instances, d_sae = pre.shape
    scores = pre if candidates is None else candidates
    top, index = scores.detach().topk(k_max, dim=-1)  # (batch, inst, k_max)
    instance = torch.arange(n_instances, device=pre.device)[None, :, None]
    rows = (torch.arange(batch, device=pre.device)[:, None, None] * n_instances + instance).expand_as(index)
    latents = instance * d_sae + index
    keep = (torch.arange(k_max, device=pre.device) < k[:, None]) & (top >= 0)
    return _scored(sae, x_centred, pre, rows.reshape(-1), latents.reshape(-1), keep.reshape(-1), k_max)


def batch_top_k_code(sae, x_centred: torch.Tensor, pre: torch.Tensor, k: torch.Tensor, k_max: int) -> SparseCode:
    """Per instance, the k[i]·batch largest entries of ReLU(pre) (batch, inst, d_sae) over the whole batch.

    Arguments as for `top_k_code`; entries ranked past k[i]·batch get value 0.
    """
    batch, n_instances, d_sae = pre.shape
    flat = torch.relu(pre.detach()).transpose(0, 1).reshape(n_instances, batch * d_sae)  # (inst, batch·d_sae)
    top, index = largest_entries(flat, k_max * batch)
    instance = torch.arange(n_instances, device=pre.device)[:, None]
    rows = (index // d_sae) * n_instances + instance
    latents = instance * d_sae + index % d_sae
    keep = (torch.arange(k_max * batch, device=pre.device) < k[:, None] * batch) & (top > 0)
    return _scored(sae, x_centred, pre, rows.reshape(-1), latents.reshape(-1), keep.reshape(-1), k_max)


SUBSAMPLE_STRIDE = 17  # prime, so the subsample runs through every latent rather than a few fixed columns


def largest_entries(flat: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` largest entries of each row of `flat` (rows, n): values and indices, (rows, count), sorted.

    The same entries as flat.topk(count) (ties aside), found faster on CPU, where topk over a
    million entries costs more than the rest of a BatchTopK step: the cut is estimated on every
    SUBSAMPLE_STRIDE-th entry (set where twice `count` entries would pass, so it lies below the
    true cut with near certainty), only entries at or above it are ranked, and if some row has
    fewer than `count` of those the plain topk runs instead. On an accelerator topk is fast and
    this search would cost a device sync, so there it is always the plain topk.
    """
    rows, n = flat.shape
    rank = -(-2 * count // SUBSAMPLE_STRIDE)
    if flat.device.type != "cpu" or rank >= n // SUBSAMPLE_STRIDE // 2:
        return flat.topk(count, dim=-1)
    guess = flat[:, ::SUBSAMPLE_STRIDE].topk(rank, dim=-1).values[:, -1:]  # (rows, 1)
    row, column = (flat >= guess).nonzero(as_tuple=True)  # row-major: each row's entries are contiguous
    counts = torch.bincount(row, minlength=rows)
    width = int(counts.max())
    if bool((counts < count).any()) or width > n // 4:  # guess too high, or no help (e.g. a sea of zeros)
        return flat.topk(count, dim=-1)
    position = torch.arange(len(row), device=flat.device) - (counts.cumsum(0) - counts)[row]
    values = torch.full((rows, width), -torch.inf, device=flat.device).index_put_((row, position), flat[row, column])
    columns = torch.zeros((rows, width), dtype=torch.long, device=flat.device).index_put_((row, position), column)
    top, pick = values.topk(count, dim=-1)
    return top, columns.gather(-1, pick)


def _scored(sae, x_centred, pre, rows, latents, keep, per_row) -> SparseCode:
    """The code's values at the given entries, ReLU'd and masked by `keep`, with autograd."""
    shape = pre.shape
    if not is_sparse(per_row, sae.d_sae):  # dense: gradients reach the encoder through π
        positions = rows * sae.d_sae + latents % sae.d_sae
        return SparseCode(rows, latents, torch.relu(pre.reshape(-1)[positions]) * keep, shape, sparse=False)
    encoder_columns = sae.W_enc.transpose(1, 2).reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
    inputs = x_centred.reshape(-1, sae.d_hidden)  # (batch·inst, d_hidden)
    scored = (inputs[rows] * encoder_columns[latents]).sum(-1) + sae.b_enc.reshape(-1)[latents]
    return SparseCode(rows, latents, torch.relu(scored) * keep, shape)


def decode_code(sae, code: SparseCode, bias: bool = True) -> torch.Tensor:
    """x̂ = W_dec z (+ b_dec): (batch, inst, d_hidden); from the entries alone when the code is sparse."""
    if not code.sparse:
        out = torch.einsum("bis,isd->bid", code.to_dense(), sae.W_dec)
        return out + sae.b_dec if bias else out
    batch, n_instances, _ = code.shape
    decoder_rows = sae.W_dec.reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
    contributions = code.values[:, None] * decoder_rows[code.latents]
    out = torch.zeros(batch * n_instances, sae.d_hidden, device=contributions.device, dtype=contributions.dtype)
    out = out.index_add(0, code.rows, contributions).view(batch, n_instances, sae.d_hidden)
    return out + sae.b_dec if bias else out

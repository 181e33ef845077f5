"""Sparse latent codes: training TopK-style SAEs at a cost set by the kept latents.

A TopK or BatchTopK SAE keeps about k of its d_sae latents per sample, so most of a dense
step's arithmetic multiplies zeros: decoding (W_dec z) and every backward product except the
encoder's forward pass. Here the code is a sparse matrix Z, one row per (sample, instance) and
one column per (instance, latent), held in compressed-row (CSR) form, and only its entries
are computed:
    select:   π = W_enc (x - b_dec) + b_enc densely, to choose which latents survive;
    re-score: the kept pre-activations are recomputed as a sampled matmul (SDDMM),
              π_e = x̄_row · W_enc[:, latent] + b_enc[latent], so that the backward pass
              touches only the kept columns (π itself then receives no gradient);
    decode:   x̂ = Z W_dec + b_dec, a sparse-dense matmul.
Both have hand-written backward passes made of the same three sparse products (sparse·dense,
sparseᵀ·dense, sampled dense·dense), which the CPU and CUDA sparse libraries run far faster
than gathers and scatters. With many latents kept per row (AuxK on a narrow SAE, a large k)
the code is computed densely instead, gathering its values from π with autograd and decoding
with a matmul. Either way the values, losses and gradients equal the dense formulation's (up
to the order of floating-point sums); tests/test_sparse_codes.py checks both paths.

Row r = sample · n_instances + instance; column c = instance · d_sae + latent, so every
instance's weights are addressed in one product.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np
import torch

from ..integer_sort import stable_argsort


class Pattern(NamedTuple):
    """Where a sparse matrix's n entries sit, in CSR form for it and for its transpose."""

    rows: torch.Tensor
    """(n,) row of each entry, ascending."""
    columns: torch.Tensor
    """(n,) column of each entry, ascending within a row."""
    row_starts: torch.Tensor
    """(n_rows + 1,) CSR row pointers."""
    column_order: torch.Tensor
    """(n,) the entries sorted by column (stable, so rows stay ascending within a column)."""
    column_starts: torch.Tensor
    """(n_columns + 1,) CSR row pointers of the transpose."""
    shape: tuple[int, int]
    """(n_rows, n_columns)."""

    @classmethod
    def of(cls, rows: torch.Tensor, columns: torch.Tensor, shape: tuple[int, int]) -> "Pattern":
        """From entries already sorted by row, then column."""
        row_starts = _starts(rows, shape[0])
        column_order = stable_argsort(columns, shape[1])
        return cls(rows, columns, row_starts, column_order, _starts(columns, shape[1]), shape)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The CSR matrix with these entry values, shape `shape`."""
        return _csr(self.row_starts, self.columns, values, self.shape)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """The transpose, as a CSR matrix of shape (n_columns, n_rows)."""
        order = self.column_order
        return _csr(self.column_starts, self.rows[order], values[order], self.shape[::-1])


def _dense_positions(rows: torch.Tensor, latents: torch.Tensor, d_sae: int) -> torch.Tensor:
    """Where entries sit in the flattened dense code (batch, inst, d_sae): rows already hold
    sample · n_instances + instance, latents instance · d_sae + latent."""
    return rows * d_sae + latents % d_sae


def _starts(sorted_index: torch.Tensor, n: int) -> torch.Tensor:
    """CSR pointers: where each of 0..n-1 starts in a sorted index, (n + 1,)."""
    counts = torch.bincount(sorted_index, minlength=n)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def _csr(row_starts, columns, values, shape) -> torch.Tensor:
    """A CSR matrix from a pattern built here, sorted, so torch need not check it."""
    with warnings.catch_warnings():  # torch notes once that CSR support is "beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(row_starts, columns, values, size=shape, check_invariants=False)


class SparseCode(NamedTuple):
    """A batch of latent codes as entries sorted by (row, column); entries with value 0 carry nothing."""

    rows: torch.Tensor
    """(n,) row of each entry: sample · n_instances + instance."""
    latents: torch.Tensor
    """(n,) column of each entry: instance · d_sae + latent."""
    values: torch.Tensor
    """(n,) activations, ≥ 0."""
    shape: tuple[int, int, int]
    """(batch, inst, d_sae) of the dense code."""
    pattern: Pattern | None = None
    """The entries' positions in CSR form when the code is computed sparsely; None: dense."""

    @property
    def sparse(self) -> bool:
        return self.pattern is not None

    def to_dense(self) -> torch.Tensor:
        """The dense code, (batch, inst, d_sae); differentiable in `values`."""
        batch, n_instances, d_sae = self.shape
        dense = torch.zeros(batch * n_instances * d_sae, device=self.values.device, dtype=self.values.dtype)
        return dense.index_add(0, _dense_positions(self.rows, self.latents, d_sae), self.values).view(self.shape)

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


SPARSE_BELOW = 8
"""Sparse arithmetic while at most d_sae / SPARSE_BELOW latents are kept per row; above that the
dense matmuls are cheaper. benchmarks/sparse_crossover.py, TopK step at d_sae 1024 on 2 CPU
threads, sparse against dense: 5.5 vs 10.1 ms at k = 8, 18.6 vs 20.3 at 128, 29.7 vs 26.1 at 256."""


def is_sparse(per_row: float, d_sae: int) -> bool:
    """Whether keeping `per_row` latents of `d_sae` per row is few enough for sparse arithmetic."""
    return per_row * SPARSE_BELOW <= d_sae


def top_k_code(sae, x: torch.Tensor, pre: torch.Tensor, k: torch.Tensor, k_max: int) -> SparseCode:
    """Each row keeps its k[i] largest entries of `pre` (instance i), ReLU'd.

    x: (batch, inst, d_hidden), the SAE's input; pre: (batch, inst, d_sae),
    its pre-activations (with autograd: the dense path takes its gradient through them);
    k: (inst,) whole numbers, k_max = max(k); entries ranked past k[i] get value 0.
    """
    batch, n_instances, d_sae = pre.shape
    rank = torch.arange(k_max, device=pre.device)
    index = pre.detach().topk(k_max, dim=-1).indices  # (batch, inst, k_max)
    keep = (rank < k[:, None]).expand_as(index)
    index, order = index.sort(dim=-1)  # CSR wants each row's columns in order
    keep = keep.gather(-1, order)
    instance = torch.arange(n_instances, device=pre.device)[None, :, None]
    rows = (torch.arange(batch, device=pre.device)[:, None, None] * n_instances + instance).expand_as(index)
    return _scored(sae, x, pre, rows.reshape(-1), (instance * d_sae + index).reshape(-1), keep.reshape(-1),
                   k_max)


def batch_top_k_code(sae, x: torch.Tensor, pre: torch.Tensor, k: torch.Tensor, k_max: int) -> SparseCode:
    """Per instance, the k[i]·batch largest entries of ReLU(pre) (batch, inst, d_sae) over the whole batch.

    Arguments as for `top_k_code`; only positive entries are kept.
    """
    batch, n_instances, d_sae = pre.shape
    flat = pre.detach().transpose(0, 1).reshape(n_instances, batch * d_sae)  # (inst, batch·d_sae); no ReLU needed
    instance, position = batch_cut(flat, k * batch, k_max * batch)
    rows = (position // d_sae) * n_instances + instance
    latents = instance * d_sae + position % d_sae
    if n_instances > 1:  # batch_cut lists instance by instance; CSR wants sample by sample
        order = stable_argsort(rows, batch * n_instances)  # stable: latents stay ascending within a row
        rows, latents = rows[order], latents[order]
    return _scored(sae, x, pre, rows, latents, None, k_max)  # every entry listed is kept


SUBSAMPLE_STRIDE = 61
"""The batch-wide cut is guessed on every 61st entry: prime, so the subsample runs through every
latent rather than a few fixed columns."""

GUESS_MARGIN = 4.0
"""How far below the expected rank of the true cut in the subsample the guess is taken, in
standard deviations (the count above the cut is close to Poisson). At k·batch = 8,192 the
subsample holds 134 ± 12 entries above the true cut and the guess is its 181st largest: about
11,000 candidates are ranked, and the guess lands above the true cut (the whole row is then
ranked by topk, with the same result) with probability about 10⁻⁴."""


def batch_cut(flat: torch.Tensor, counts: torch.Tensor, count_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row i of `flat` (rows, n), where its counts[i] largest entries are, keeping only positive ones.

    counts: (rows,) whole numbers, count_max = max(counts). Returns (row, position) index
    tensors, sorted by row, then position. Equal to a topk (ties at the cut aside: an entry
    equal to the counts[i]-th largest is kept too).
    """
    if flat.device.type == "cpu":
        found = _cut_from_a_guess(flat, counts, count_max)
        if found is not None:
            return found
    rows, n = flat.shape
    top, index = flat.topk(count_max, dim=-1)
    keep = (torch.arange(count_max, device=flat.device) < counts[:, None]) & (top > 0)
    row = torch.arange(rows, device=flat.device)[:, None].expand_as(index)[keep]
    position = index[keep]
    order = (row * n + position).argsort()
    return row[order], position[order]


_ORDERED_INTEGERS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _cut_from_a_guess(flat, counts, count_max):
    """`batch_cut` without a topk over every entry, which on CPU costs more than the rest of a step.

    The cut is first guessed on every SUBSAMPLE_STRIDE-th entry, GUESS_MARGIN standard deviations
    below where the true cut should fall, so it lies below the true cut with near certainty;
    only the entries above the guess are ranked. None when the guess fails (some row has too
    few positive entries above it) or does not help (most entries pass): the caller then
    ranks everything. On an accelerator topk is fast and this would cost device syncs, so it
    is used on CPU only.

    The work is done in numpy (its selection and scans cost a fraction of torch's at these
    sizes) on the floats' bit patterns read as integers, whose order is the floats' order for
    positive values, the only ones kept: bf16 scores need no conversion.
    """
    rows, n = flat.shape
    expected = count_max / SUBSAMPLE_STRIDE
    rank = math.ceil(expected + GUESS_MARGIN * math.sqrt(expected)) + 1
    if flat.dtype not in _ORDERED_INTEGERS or rank >= (n // SUBSAMPLE_STRIDE) // 2:
        return None
    scores = flat.contiguous().view(_ORDERED_INTEGERS[flat.dtype]).numpy()  # (rows, n)
    sample = scores[:, ::SUBSAMPLE_STRIDE]
    guess = np.partition(sample, -rank, axis=-1)[:, -rank:][:, :1]  # (rows, 1): each row's rank-th largest
    index = np.flatnonzero(scores >= np.maximum(guess, 1))  # ascending: by row, then position; positive only
    values = scores.reshape(-1)[index]
    row, position = index // n, index % n
    per_row = np.bincount(row, minlength=rows)
    counts = counts.cpu().numpy()
    if (per_row < counts).any() or per_row.max() > n // 4:
        return None
    ends = np.cumsum(per_row)
    cut = np.array([np.partition(values[end - size:end], size - count)[size - count]  # counts[i]-th largest
                    for end, size, count in zip(ends, per_row, counts)])
    keep = np.flatnonzero(values >= cut[row])
    return torch.from_numpy(row[keep]), torch.from_numpy(position[keep])


def _in_float32(like: torch.Tensor):
    """Autocast off: the sparse kernels have no bfloat16 versions, and the kept entries are few
    enough to compute exactly (under bf16 autocast only the dense selection runs in bf16)."""
    return torch.autocast(like.device.type, enabled=False)


class SampledScores(torch.autograd.Function):
    """π_e = inputs[row_e] · columns[col_e] + bias[col_e] at the entries of a pattern, (n,).

    inputs: (n_rows, d); columns: (n_columns, d); bias: (n_columns,). Backward, with G the
    sparse matrix of the entries' gradients: ∂inputs = G columns, ∂columns = Gᵀ inputs,
    ∂bias = the column sums of G.
    """

    @staticmethod
    def forward(ctx, inputs, columns, bias, pattern: Pattern):
        inputs, columns = inputs.float(), columns.float()
        ctx.save_for_backward(inputs, columns)
        ctx.pattern = pattern
        start = pattern.matrix(bias.float().index_select(0, pattern.columns))
        with _in_float32(inputs):
            return torch.sparse.sampled_addmm(start, inputs, columns.t()).values()

    @staticmethod
    def backward(ctx, grad):
        inputs, columns = ctx.saved_tensors
        pattern, grad = ctx.pattern, grad.contiguous()
        grad_inputs = pattern.matrix(grad) @ columns if ctx.needs_input_grad[0] else None
        grad_columns = pattern.transposed(grad) @ inputs if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros(len(columns), device=grad.device).index_add_(0, pattern.columns, grad)
        return grad_inputs, grad_columns, grad_bias, None


class SparseDecode(torch.autograd.Function):
    """Z W for Z the sparse matrix of `values` (n,) at a pattern, W: (n_columns, d) -> (n_rows, d).

    Backward, with H the output's gradient: ∂values = (H Wᵀ) sampled at the pattern, ∂W = Zᵀ H.
    """

    @staticmethod
    def forward(ctx, values, weight, pattern: Pattern):
        values, weight = values.float(), weight.float()
        ctx.save_for_backward(values, weight)
        ctx.pattern = pattern
        with _in_float32(values):
            return pattern.matrix(values) @ weight

    @staticmethod
    def backward(ctx, grad):
        values, weight = ctx.saved_tensors
        pattern, grad = ctx.pattern, grad.contiguous()
        grad_values = grad_weight = None
        if ctx.needs_input_grad[0]:
            at_pattern = pattern.matrix(torch.zeros_like(values))
            grad_values = torch.sparse.sampled_addmm(at_pattern, grad, weight.t()).values()
        if ctx.needs_input_grad[1]:
            grad_weight = pattern.transposed(values) @ grad
        return grad_values, grad_weight, None


def _scored(sae, x, pre, rows, latents, keep, per_row) -> SparseCode:
    """The code's values at the given entries (sorted by row, then column), ReLU'd and masked by
    `keep` (None: every entry is kept)."""
    batch, n_instances, d_sae = shape = pre.shape
    pattern = None
    if is_sparse(per_row, d_sae):
        pattern = Pattern.of(rows, latents, (batch * n_instances, n_instances * d_sae))
        # (inst·d_sae, d_hidden), copied row-major: the sampled matmul reads each latent's weights as a
        # contiguous row (given W_enc's own layout it makes that copy itself and then runs 4× slower)
        encoder_columns = sae.W_enc.transpose(1, 2).reshape(-1, sae.d_hidden).contiguous()
        # W_enc (x - b_dec) + b_enc scored as W_enc x + (b_enc - W_enc b_dec), as in SAE.centred_projection:
        # x needs no gradient, so the backward pass skips a sparse product
        with _in_float32(x):  # the bias exactly, even when bf16 autocast chose the latents (SampledScores is float32)
            bias = (sae.b_enc - sae._encoded_b_dec()).reshape(-1)
        scored = SampledScores.apply(x.reshape(-1, sae.d_hidden), encoder_columns, bias, pattern)
    else:  # dense: gradients reach the encoder through π
        scored = pre.reshape(-1).index_select(0, _dense_positions(rows, latents, d_sae))
    values = torch.relu(scored) if keep is None else torch.relu(scored) * keep
    return SparseCode(rows, latents, values, shape, pattern)


def decode_code(sae, code: SparseCode, bias: bool = True) -> torch.Tensor:
    """x̂ = W_dec z (+ b_dec): (batch, inst, d_hidden); a sparse-dense matmul when the code is sparse."""
    if code.sparse:
        batch, n_instances, _ = code.shape
        decoder_rows = sae.W_dec.reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
        out = SparseDecode.apply(code.values, decoder_rows, code.pattern).view(batch, n_instances, sae.d_hidden)
    else:
        out = torch.einsum("bis,isd->bid", code.to_dense(), sae.W_dec)
    return out + sae.b_dec if bias else out

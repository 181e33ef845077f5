"""Sparse latent codes with a fixed number of entries: what the TopK family computes and decodes.

A TopK-style SAE keeps about k of its d_sae latents per sample, so most of a dense step multiplies
zeros. Here a batch's code is a list of N entries (row, latent, value), N fixed by the configuration
(batch·k for TopK, k·batch per instance for BatchTopK), and only the entries are computed:
    score:   π_e = x_row · W_enc[:, latent] + b_latent, a sampled product (SDDMM) whose backward
             touches only the kept columns of W_enc;
    decode:  x̂_row = Σ_e v_e W_dec[latent_e], a segment sum of decoder rows.
Both backward passes are segment sums too, over the entries grouped by latent, so a step never
builds a (batch, d_sae) gradient. Entries of value 0 (not kept, or negative before the ReLU) carry
nothing and cost what any other entry costs: shapes never depend on the data, so the step can be
captured in a CUDA graph.

Rows are instance-major, row = instance · batch + sample, and columns are instance · d_sae + latent, so
every instance's weights are addressed in one product. Autocast is off inside: the entries are few
enough to compute in float32 even when bf16 autocast chose them (the dense selection is the bf16 part).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Pattern(NamedTuple):
    """Where N entries sit: grouped by row for the forward passes, by column for the backward passes."""

    rows: torch.Tensor
    """(N,) row of each entry, ascending."""
    columns: torch.Tensor
    """(N,) column of each entry."""
    row_starts: torch.Tensor
    """(n_rows,) where each row's entries start."""
    by_column: torch.Tensor
    """(N,) the entries in column order (stable: rows stay ascending within a column)."""
    column_starts: torch.Tensor
    """(n_columns,) where each column's entries start in that order."""

    @classmethod
    def of(cls, rows: torch.Tensor, columns: torch.Tensor, n_rows: int, n_columns: int) -> "Pattern":
        """From entries sorted by row; fixed-shape ops only (a stable sort and two searchsorted)."""
        by_column = torch.argsort(columns, stable=True)
        row_starts = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
        column_starts = torch.searchsorted(columns[by_column], torch.arange(n_columns, device=rows.device))
        return cls(rows, columns, row_starts, by_column, column_starts)


def segment_sum(table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, starts: torch.Tensor,
                segment: torch.Tensor) -> torch.Tensor:
    """out[s] = Σ_{e in segment s} weight_e · table[index_e]: (n_segments, d).

    index, weight, segment: (N,), grouped by segment (segment ascending), starts: (n_segments,) where
    each segment begins. On CPU embedding_bag sums each bag in one pass (a tenth of index_add's time
    there); elsewhere index_add, whose atomics need no offsets read back (benchmarks/run.py, "decode").
    """
    if table.device.type == "cpu":
        return F.embedding_bag(index, table, starts, mode="sum", per_sample_weights=weight)
    out = table.new_zeros(len(starts), table.shape[1])
    return out.index_add_(0, segment, table.index_select(0, index) * weight[:, None])


def _rowwise_dot(a: torch.Tensor, a_index: torch.Tensor, b: torch.Tensor, b_index: torch.Tensor) -> torch.Tensor:
    """a[a_index_e] · b[b_index_e] for every entry: (N,)."""
    return (a.index_select(0, a_index) * b.index_select(0, b_index)).sum(-1)


class SampledScores(torch.autograd.Function):
    """π_e = inputs[row_e] · columns[col_e] + bias[col_e] at a pattern's entries, (N,).

    inputs: (n_rows, d), no gradient; columns: (n_columns, d); bias: (n_columns,). Backward, with g the
    entries' gradients: ∂columns[c] = Σ_{e in column c} g_e inputs[row_e], ∂bias[c] = Σ_{e in column c} g_e.
    """

    @staticmethod
    def forward(ctx, inputs, columns, bias, pattern: Pattern):
        ctx.save_for_backward(inputs, *pattern)
        ctx.n_columns = columns.shape[0]
        return _rowwise_dot(inputs, pattern.rows, columns, pattern.columns) + bias.index_select(0, pattern.columns)

    @staticmethod
    def backward(ctx, grad):
        inputs, *fields = ctx.saved_tensors
        pattern = Pattern(*fields)
        order = pattern.by_column
        columns_sorted = pattern.columns.index_select(0, order)
        grad_sorted = grad.index_select(0, order)
        grad_columns = segment_sum(inputs, pattern.rows.index_select(0, order), grad_sorted, pattern.column_starts,
                                   columns_sorted)
        grad_bias = grad.new_zeros(ctx.n_columns).index_add_(0, pattern.columns, grad)
        return None, grad_columns, grad_bias, None


class SparseDecode(torch.autograd.Function):
    """x̂[r] = Σ_{e in row r} v_e W[col_e] for values v (N,) at a pattern, W: (n_columns, d) -> (n_rows, d).

    Backward, with H the output's gradient: ∂v_e = H[row_e] · W[col_e], ∂W[c] = Σ_{e in column c} v_e H[row_e].
    """

    @staticmethod
    def forward(ctx, values, weight, pattern: Pattern):
        ctx.save_for_backward(values, weight, *pattern)
        return segment_sum(weight, pattern.columns, values, pattern.row_starts, pattern.rows)

    @staticmethod
    def backward(ctx, grad):
        values, weight, *fields = ctx.saved_tensors
        pattern = Pattern(*fields)
        grad = grad.contiguous()
        grad_values = _rowwise_dot(grad, pattern.rows, weight, pattern.columns)
        order = pattern.by_column
        grad_weight = segment_sum(grad, pattern.rows.index_select(0, order), values.index_select(0, order),
                                  pattern.column_starts, pattern.columns.index_select(0, order))
        return grad_values, grad_weight, None


class SparseCode(NamedTuple):
    """A batch of latent codes as N entries; entries of value 0 carry nothing."""

    pattern: Pattern
    values: torch.Tensor
    """(N,) activations, >= 0, float32."""
    shape: tuple[int, int, int]
    """(batch, inst, d_sae) of the dense code."""

    @property
    def latents(self) -> torch.Tensor:
        """(N,) latent of each entry within its instance."""
        return self.pattern.columns % self.shape[2]

    def instance(self) -> torch.Tensor:
        """(N,) instance of each entry."""
        return self.pattern.rows // self.shape[0]

    def l0(self) -> torch.Tensor:
        """Mean number of non-zero latents per sample, (inst,)."""
        batch, n_instances, _ = self.shape
        firing = (self.values > 0).float()
        return firing.new_zeros(n_instances).index_add_(0, self.instance(), firing) / batch

    def fired(self) -> torch.Tensor:
        """Which latents fired anywhere in the batch, bool (inst, d_sae)."""
        _, n_instances, d_sae = self.shape
        counts = self.values.new_zeros(n_instances * d_sae).index_add_(0, self.pattern.columns, self.values)
        return (counts > 0).view(n_instances, d_sae)


def code_at(sae, x: torch.Tensor, rows: torch.Tensor, latents: torch.Tensor, keep: torch.Tensor | None = None
            ) -> SparseCode:
    """The code ReLU(W_enc (x - b_dec) + b_enc) at the given entries, scored with autograd.

    x: (batch, inst, d_hidden); rows (N,) ascending, row = instance · batch + sample; latents (N,) within
    the instance; keep: optional (N,) 0/1 mask of the entries that count (others get value 0).
    """
    batch, n_instances, _ = x.shape
    d_sae = sae.d_sae
    columns = rows // batch * d_sae + latents
    pattern = Pattern.of(rows, columns, n_instances * batch, n_instances * d_sae)
    with torch.autocast(x.device.type, enabled=False):
        inputs = x.float().transpose(0, 1).reshape(-1, sae.d_hidden)  # (inst·batch, d_hidden), instance-major
        # (inst·d_sae, d_hidden), each latent's encoder weights as one contiguous row for the gathers
        encoder_rows = sae.W_enc.transpose(1, 2).reshape(-1, sae.d_hidden)
        # W_enc (x - b_dec) + b_enc as W_enc x + (b_enc - W_enc b_dec): x needs no gradient then
        bias = (sae.b_enc - sae.encoded_b_dec()).reshape(-1)
        values = torch.relu(SampledScores.apply(inputs, encoder_rows, bias, pattern))
    if keep is not None:
        values = values * keep
    return SparseCode(pattern, values, (batch, n_instances, d_sae))


def decode_code(sae, code: SparseCode, values: torch.Tensor | None = None, bias: bool = True) -> torch.Tensor:
    """x̂ = W_dec z (+ b_dec): (batch, inst, d_hidden). `values` replaces the code's own (a masked copy)."""
    batch, n_instances, _ = code.shape
    with torch.autocast(code.values.device.type, enabled=False):
        decoder_rows = sae.W_dec.reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
        out = SparseDecode.apply(code.values if values is None else values, decoder_rows, code.pattern)
    out = out.view(n_instances, batch, sae.d_hidden).transpose(0, 1)
    return out + sae.b_dec if bias else out

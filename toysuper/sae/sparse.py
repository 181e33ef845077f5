"""Sparse latent codes with a fixed number of entries: the sparse implementation of sae/codes.py.

A TopK-style SAE keeps about k of its d_sae latents per sample, so most of a dense step multiplies zeros.
Here a batch's code is N entries (row, latent, value), N fixed by the configuration, and only they are
computed:
    score:   π_e = x_row · W_enc[:, latent] + b_latent, a sampled product (SDDMM);
    decode:  x̂_row = Σ_e v_e W_dec[latent_e], a segment sum of decoder rows.
Autograd differentiates both without a (batch, d_sae) tensor. Rows are instance · batch + sample and columns
instance · d_sae + latent, so every instance's weights are addressed in one product. Autocast is off inside:
the entries are few enough for float32 even when bf16 autocast chose them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class SparseCode(NamedTuple):
    """A batch of latent codes as N entries, grouped by row (rows ascending)."""

    rows: torch.Tensor  # (N,) instance · batch + sample, ascending
    columns: torch.Tensor  # (N,) instance · d_sae + latent
    row_starts: torch.Tensor  # (inst·batch,) where each row's entries start
    values: torch.Tensor  # (N,) activations, >= 0, float32
    shape: tuple[int, int, int]  # (batch, inst, d_sae) of the dense code

    @property
    def latents(self) -> torch.Tensor:
        """(N,) latent of each entry within its instance."""
        return self.columns % self.shape[2]

    def decode(self, sae, bias: bool = True) -> torch.Tensor:
        """x̂ = W_dec z (+ b_dec): (batch, inst, d_hidden). On the CPU embedding_bag sums each row in one pass
        (a tenth of index_add's time there); elsewhere index_add, which needs no offsets."""
        batch, n_instances, _ = self.shape
        with torch.autocast(self.values.device.type, enabled=False):
            decoder_rows = sae.W_dec.reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
            if decoder_rows.device.type == "cpu":
                out = F.embedding_bag(self.columns, decoder_rows, self.row_starts, mode="sum",
                                      per_sample_weights=self.values)
            else:
                out = decoder_rows.new_zeros(n_instances * batch, sae.d_hidden).index_add(
                    0, self.rows, decoder_rows.index_select(0, self.columns) * self.values[:, None])
        out = out.view(n_instances, batch, sae.d_hidden).transpose(0, 1)
        return out + sae.b_dec if bias else out

    def only(self, latents: torch.Tensor) -> "SparseCode":
        """The code restricted to the latents where `latents` (inst, d_sae) is 1."""
        return self._replace(values=self.values * latents.reshape(-1).index_select(0, self.columns))

    def l0(self) -> torch.Tensor:
        """Mean number of non-zero latents per sample, (inst,)."""
        batch, n_instances, _ = self.shape
        firing = (self.values.detach() > 0).float()
        return firing.new_zeros(n_instances).index_add_(0, self.rows // batch, firing) / batch

    def fired(self) -> torch.Tensor:
        """Which latents fired anywhere in the batch, bool (inst, d_sae)."""
        _, n_instances, d_sae = self.shape
        values = self.values.detach()
        return (values.new_zeros(n_instances * d_sae).index_add_(0, self.columns, values) > 0).view(n_instances, d_sae)


def code_at(sae, x: torch.Tensor, rows: torch.Tensor, latents: torch.Tensor, keep: torch.Tensor) -> SparseCode:
    """The code ReLU(W_enc (x - b_dec) + b_enc) · keep at the given entries, scored with autograd.

    x: (batch, inst, d_hidden); rows (N,) ascending; latents (N,) within the instance; keep (N,) 0/1.
    """
    batch, n_instances, _ = x.shape
    columns = rows // batch * sae.d_sae + latents
    row_starts = torch.searchsorted(rows, torch.arange(n_instances * batch, device=rows.device))
    with torch.autocast(x.device.type, enabled=False):
        inputs = x.float().transpose(0, 1).reshape(-1, sae.d_hidden)  # (inst·batch, d_hidden), instance-major
        encoder_rows = sae.W_enc.transpose(1, 2).reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
        # W_enc (x - b_dec) + b_enc as W_enc x + (b_enc - W_enc b_dec): x needs no gradient then
        bias = (sae.b_enc - sae.encoded_b_dec()).reshape(-1)
        scores = (inputs.index_select(0, rows) * encoder_rows.index_select(0, columns)).sum(-1)
        values = torch.relu(scores + bias.index_select(0, columns)) * keep
    return SparseCode(rows, columns, row_starts, values, (batch, n_instances, sae.d_sae))

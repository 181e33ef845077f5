"""Codes of the TopK family: the chosen entries of a batch's pre-activations, scored and decoded.

A recipe chooses, in dense terms, which entries of its pre-activations π (batch, inst, d_sae) make the code:
`positions` (inst, n) index each instance's flattened batch (sample · d_sae + latent), a bool `keep` (inst, n)
the ones that count. The code is z = scatter(positions, ReLU(π[positions]) · keep), x̂ = W_dec z (+ b_dec).
The choices are `top_k` (TopK), `choose_batch_top_k` (BatchTopK) and `top_k_among` (AuxK, choice and decode
in one). Two implementations compute the same numbers:
    dense:  SAELens's formulation, a scatter into (batch, inst, d_sae) and a matmul; fixed shapes, no sync;
    sparse: only the N chosen entries, which pays where k ≪ d_sae and matmuls are slow (CPUs): scored as
            sampled products π_e = x_row · W_enc[:, latent_e] + b_latent_e, decoded as a segment sum
            x̂_row = Σ_e z_e W_dec[latent_e], both differentiated by autograd without a (batch, d_sae) tensor;
            its AuxK and BatchTopK paths read counts back to rank fewer candidates (eager steps only).
`BY_DEVICE` chooses one per device type by measurement (benchmarks/choices.py); recipes never know which.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F


class DenseCode(NamedTuple):
    """A batch's code as its dense activations."""

    acts: torch.Tensor  # (batch, inst, d_sae), >= 0

    def decode(self, sae, bias: bool = True) -> torch.Tensor:
        """W_dec z (+ b_dec): (batch, inst, d_hidden)."""
        out = torch.einsum("bis,isd->bid", self.acts, sae.W_dec)
        return out + sae.b_dec if bias else out

    def only(self, latents: torch.Tensor) -> "DenseCode":
        """The code restricted to the latents where `latents` (inst, d_sae) is 1."""
        return DenseCode(self.acts * latents)

    def fired(self) -> torch.Tensor:
        """Which latents fired anywhere in the batch, bool (inst, d_sae)."""
        return self.acts.detach().amax(0) > 0

    def l0(self) -> torch.Tensor:
        """Mean number of firing latents per sample, (inst,)."""
        return (self.acts.detach() > 0).float().sum(-1).mean(0)


class SparseCode(NamedTuple):
    """A batch's code as N entries grouped by row. Rows are instance · batch + sample and columns
    instance · d_sae + latent, so every instance's weights are addressed in one product. Autocast is off
    inside: the entries are few enough for float32 even when bf16 autocast chose them."""

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


def top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """TopK's choice: each sample's k[i] largest positive pre-activations (instance i; k_max = max(k)), as
    (positions, keep), each (inst, batch·k_max), positions = sample · n + index along the last axis of pre."""
    batch, n_instances, n = pre.shape
    top, index = pre.transpose(0, 1).topk(k_max, dim=-1)  # (inst, batch, k_max)
    positions = index + torch.arange(batch, device=pre.device)[:, None] * n
    keep = (torch.arange(k_max, device=pre.device) < k[:, None, None]) & (top > 0)
    return positions.reshape(n_instances, -1), keep.reshape(n_instances, -1)


def batch_top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchTopK's choice: per instance i, the k[i]·batch largest positive pre-activations of its whole
    flattened batch, as (positions, keep), each (inst, k_max·batch), positions = sample · d_sae + latent."""
    batch, n_instances, _ = pre.shape
    top, positions = pre.transpose(0, 1).reshape(n_instances, -1).topk(k_max * batch, dim=-1)
    keep = (torch.arange(k_max * batch, device=pre.device) < (k * batch)[:, None]) & (top > 0)
    return positions, keep


SUBSAMPLE_STRIDE = 61  # the batch-wide cut is guessed on every 61st entry: prime, so it runs through every latent
GUESS_MARGIN = 4.0  # standard deviations (the count above the cut is ~Poisson) the guess lies below the true cut


def guessed_batch_top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_top_k` for an eager CPU step (counts read back): only the entries above a cut guessed on a
    subsample are ranked; `batch_top_k` when the guess fails. Padding repeats the last kept position, keep False."""
    batch, n_instances, _ = pre.shape
    flat = pre.transpose(0, 1).reshape(n_instances, -1)
    count = k_max * batch
    expected = count / SUBSAMPLE_STRIDE
    rank = math.ceil(expected + GUESS_MARGIN * math.sqrt(expected)) + 1
    if rank >= flat.shape[1] // SUBSAMPLE_STRIDE // 2:
        return batch_top_k(pre, k, k_max)
    guess = flat[:, ::SUBSAMPLE_STRIDE].topk(rank, dim=-1).values[:, -1:].clamp_min(torch.finfo(pre.dtype).tiny)
    positions = []
    for i in range(n_instances):  # the positive entries above the guess (numpy: torch's nonzero is slow here)
        candidates = torch.from_numpy(np.flatnonzero(flat[i].float().numpy() >= guess[i].item()))
        if len(candidates) < int(k[i]) * batch:
            return batch_top_k(pre, k, k_max)
        chosen = candidates[flat[i, candidates].topk(int(k[i]) * batch).indices].sort().values
        positions.append(torch.cat([chosen, chosen[-1:].expand(count - len(chosen))]))
    return torch.stack(positions), torch.arange(count, device=pre.device) < (k * batch)[:, None]


def scatter(pre: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The dense code ReLU(π) · keep at `positions`, 0 elsewhere: (batch, inst, n) like pre."""
    batch, n_instances, n = pre.shape
    flat = pre.transpose(0, 1).reshape(n_instances, batch * n)
    values = torch.relu(flat.gather(1, positions)) * keep
    return torch.zeros_like(flat).scatter(1, positions, values).view(n_instances, batch, n).transpose(0, 1)


def dense(sae, x: torch.Tensor, pre: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> DenseCode:
    return DenseCode(scatter(pre, positions, keep))


def dense_top_k_among(sae, x, pre, among, k, k_max) -> torch.Tensor:
    """`top_k_among` as written: mask, top-k, scatter, matmul."""
    masked = pre.detach().masked_fill(~among, -torch.inf)
    return dense(sae, x, pre, *top_k(masked, k, k_max)).decode(sae, bias=False)


def sparse(sae, x: torch.Tensor, pre: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> SparseCode:
    """The code at the chosen entries, each scored afresh from x (pre only chose them) with autograd."""
    batch, n_instances, d_sae = pre.shape
    positions, order = positions.sort(-1)  # entries grouped by row
    instance = torch.arange(n_instances, device=pre.device)[:, None]
    rows = (positions // d_sae + instance * batch).reshape(-1)
    columns = (positions % d_sae + instance * d_sae).reshape(-1)
    row_starts = torch.searchsorted(rows, torch.arange(n_instances * batch, device=rows.device))
    with torch.autocast(x.device.type, enabled=False):
        inputs = x.float().transpose(0, 1).reshape(-1, sae.d_hidden)  # (inst·batch, d_hidden), instance-major
        encoder_rows = sae.W_enc.transpose(1, 2).reshape(-1, sae.d_hidden)  # (inst·d_sae, d_hidden)
        # W_enc (x - b_dec) + b_enc as W_enc x + (b_enc - W_enc b_dec): x needs no gradient then
        bias = (sae.b_enc - sae.encoded_b_dec()).reshape(-1)
        scores = (inputs.index_select(0, rows) * encoder_rows.index_select(0, columns)).sum(-1)
        values = torch.relu(scores + bias.index_select(0, columns)) * keep.gather(1, order).reshape(-1).float()
    return SparseCode(rows, columns, row_starts, values, (batch, n_instances, d_sae))


def columns_top_k_among(sae, x, pre, among, k, k_max) -> torch.Tensor:
    """`top_k_among` over the columns of the `among` latents only, their count read back (eager steps only):
    AuxK's few dead latents cost three narrow matmuls instead of three wide ones and a topk over all."""
    batch, n_instances, d_sae = pre.shape
    count = among.sum(-1)  # (inst,)
    width = int(count.max())
    if width == 0:
        return x.new_zeros(batch, n_instances, sae.d_hidden)
    columns = torch.sort(among.to(torch.uint8), dim=-1, descending=True, stable=True).indices[:, :width]
    valid = torch.arange(width, device=x.device) < count[:, None]
    with torch.autocast(x.device.type, enabled=False):
        encoder = sae.W_enc.gather(2, columns[:, None, :].expand(-1, sae.d_hidden, -1))  # (inst, d_hidden, width)
        bias = (sae.b_enc - sae.encoded_b_dec()).gather(1, columns)  # (inst, width)
        block = torch.baddbmm(bias[:, None, :], x.float().transpose(0, 1), encoder).transpose(0, 1)  # π there
        candidates = block.detach().masked_fill(~valid, -torch.inf)
        if bool(((candidates > 0).float().sum(-1) > k).any()):  # some sample must choose its k largest
            chosen = top_k(candidates, k, min(k_max, width))
        else:  # every positive candidate is kept: no topk
            chosen = (torch.arange(batch * width, device=x.device).expand(n_instances, -1),
                      (candidates > 0).transpose(0, 1).reshape(n_instances, -1))
        decoder = sae.W_dec.gather(1, columns[:, :, None].expand(-1, -1, sae.d_hidden))  # (inst, width, d_hidden)
        return torch.einsum("biw,iwd->bid", scatter(block, *chosen), decoder)


class Codes(NamedTuple):
    """One implementation of `encode`, `top_k_among` and `batch_top_k` below."""

    encode: Callable
    top_k_among: Callable
    batch_top_k: Callable


DENSE = Codes(dense, dense_top_k_among, batch_top_k)
SPARSE = Codes(sparse, columns_top_k_among, guessed_batch_top_k)
BY_DEVICE = {"cpu": SPARSE}  # any other device: DENSE (a plain captured step is fastest on CUDA)


def encode(sae, x: torch.Tensor, pre: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor):
    """The code z = scatter(positions, ReLU(pre[positions]) · keep), with autograd, a DenseCode or SparseCode.

    x: the input (batch, inst, d_hidden); pre: W_enc (x - b_dec) + b_enc (batch, inst, d_sae); positions:
    (inst, n), distinct within an instance; keep: bool (inst, n)."""
    return BY_DEVICE.get(x.device.type, DENSE).encode(sae, x, pre, positions, keep)


def choose_batch_top_k(pre: torch.Tensor, k: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_top_k`, by this device's implementation."""
    return BY_DEVICE.get(pre.device.type, DENSE).batch_top_k(pre, k, k_max)


def top_k_among(sae, x: torch.Tensor, pre: torch.Tensor, among: torch.Tensor, k: torch.Tensor, k_max: int
                ) -> torch.Tensor:
    """ê = W_dec ReLU(TopK_k(π masked to the latents `among`)), no decoder bias (AuxK): (batch, inst, d_hidden);
    among: bool (inst, d_sae); k: (inst,) whole numbers, k_max = max(k)."""
    return BY_DEVICE.get(x.device.type, DENSE).top_k_among(sae, x, pre, among, k, k_max)

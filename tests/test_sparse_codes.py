"""The sparse training code of TopK and BatchTopK equals the dense formulas, gradients included, on the
fixed-shape path and on the CPU's data-sized paths alike."""

import pytest
import torch

from toysuper import SAE
from toysuper.sae import selection
from toysuper.sae.selection import _cut_from_a_guess
from toysuper.sae.sparse import code_at, decode_code
from toysuper.sae.state import TrainState
from device import DEVICE


def dense_top_k(values, k):
    """Per row, keep the k[i] largest (instance i); a reference written from the definition."""
    out = torch.zeros_like(values)
    for i, k_i in enumerate(k):
        top, index = values[:, i].topk(k_i, dim=-1)
        out[:, i] = torch.zeros_like(values[:, i]).scatter(-1, index, top)
    return out


def dense_batch_top_k(values, k):
    """Per instance, keep the k[i]·batch largest entries of the whole batch."""
    out = torch.zeros_like(values)
    batch = values.shape[0]
    for i, k_i in enumerate(k):
        flat = values[:, i].reshape(-1)
        top, index = flat.topk(k_i * batch)
        out[:, i] = torch.zeros_like(flat).scatter(0, index, top).view(batch, -1)
    return out


def dense_reference_loss(sae, x, dead, k, k_aux, batch_wide):
    """Gao et al. 2024's loss (and Bussmann et al.'s batch-wide variant) written densely."""
    pre = torch.einsum("bid,ids->bis", x - sae.b_dec, sae.W_enc) + sae.b_enc
    acts = dense_batch_top_k(torch.relu(pre), k) if batch_wide else torch.relu(dense_top_k(pre, k))
    x_hat = torch.einsum("bis,isd->bid", acts, sae.W_dec) + sae.b_dec
    mse = (x - x_hat).pow(2).sum(-1).mean(0)
    candidates = torch.where(dead, torch.relu(pre), -1.0)
    z_aux = torch.relu(dense_top_k(candidates, k_aux))
    e_hat = torch.einsum("bis,isd->bid", z_aux, sae.W_dec)
    aux = ((x - x_hat).detach() - e_hat).pow(2).sum(-1).mean(0)
    return mse + sae.aux_coefficient * aux, acts


@pytest.mark.parametrize("fixed_shapes", [True, False])
@pytest.mark.parametrize("recipe", ["topk", "batchtopk"])
def test_sparse_training_loss_and_gradients_equal_the_dense_formula(recipe, fixed_shapes):
    torch.manual_seed(0)
    # batchtopk without its TopK warm-up: the batch-wide code (the warm-up's code is topk's, the other case)
    warmup = {"topk_warmup": 0.0} if recipe == "batchtopk" else {}
    sae = SAE(6, 12, n_instances=2, recipe=recipe, seed=1, device=DEVICE, k=[2, 3], k_aux=[3, 4], **warmup)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(16, 2, 6)
    since_fired = torch.zeros(2, 12)
    since_fired[0, [1, 4, 7, 8]] = 100.0
    since_fired[1, [0, 2, 5, 9, 11]] = 100.0
    state = TrainState(samples_since_fired=since_fired, dead_window=50, step=torch.zeros(()),
                       fixed_shapes=fixed_shapes)
    terms = sae.recipe.loss(sae, x, state)
    terms["loss"].sum().backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    reference, acts = dense_reference_loss(sae, x, since_fired >= 50, [2, 3], [3, 4], recipe == "batchtopk")
    reference.sum().backward()
    assert (terms["auxk"] > 0).all()
    torch.testing.assert_close(terms["loss"], reference, atol=1e-5, rtol=1e-5)
    assert torch.allclose(terms["l0"], (acts > 0).float().sum(-1).mean(0))
    assert torch.equal(terms["fired"], (acts > 0).any(0))
    for name, p in sae.named_parameters():
        torch.testing.assert_close(sparse_grads[name], p.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_code_round_trips_to_dense_and_decodes():
    sae = SAE(4, 5, n_instances=2, recipe="topk", seed=0, device=DEVICE, k=2)
    with torch.no_grad():
        sae.b_dec.normal_()
    x = torch.randn(3, 2, 4)
    pre = sae.centred_pre_activations(x).detach()
    code = code_at(sae, x, *selection.top_k(pre, sae.k.long(), 2))
    dense = code.to_dense()
    assert torch.allclose(dense, torch.relu(dense_top_k(pre, [2, 2])), atol=1e-6)
    assert torch.allclose(decode_code(sae, code), sae.decode(dense), atol=1e-6)
    assert torch.allclose(decode_code(sae, code, bias=False), sae.decode(dense) - sae.b_dec, atol=1e-6)
    assert torch.equal(code.fired(), (dense > 0).any(0))


@pytest.mark.parametrize("case", ["random", "bfloat16", "ties", "mostly_zeros"])
def test_batch_top_k_cpu_cut_equals_the_fixed_shape_topk(case):
    """The CPU path keeps the same entries as torch.topk (ties at the cut: the same count, the lowest
    positions), in the same fixed-shape layout; where its guess cannot work it falls back to topk.
    (A CPU path: its tensors are on the CPU whatever device the suite runs on.)"""
    torch.manual_seed(0)
    batch, d_sae = 40, 700
    with torch.device("cpu"):
        pre = {"random": torch.randn(batch, 3, d_sae),
               "bfloat16": torch.randn(batch, 3, d_sae).bfloat16(),  # compared as bit patterns: no conversion
               "ties": torch.randint(0, 40, (batch, 3, d_sae)).float(),
               "mostly_zeros": torch.zeros(batch, 3, d_sae).index_fill_(2, torch.arange(3), 1.0)}[case]
        k = torch.tensor([6, 3, 4])
    flat = pre.transpose(0, 1).reshape(3, -1)
    assert (_cut_from_a_guess(flat, k * batch, 6 * batch) is None) == (case == "mostly_zeros")
    rows, latents, keep = selection.batch_top_k(pre, k, 6, fixed_shapes=False)
    want_rows, want_latents, want_keep = selection.batch_top_k(pre, k, 6, fixed_shapes=True)
    assert rows.shape == want_rows.shape == (3 * 6 * batch,)
    assert torch.equal(rows, rows.sort().values)  # ascending rows, as the code's pattern needs
    kept = {(r, l) for r, l, kk in zip(rows.tolist(), latents.tolist(), keep.tolist()) if kk}
    want = {(r, l) for r, l, kk in zip(want_rows.tolist(), want_latents.tolist(), want_keep.tolist()) if kk}
    assert len(kept) == len(want) == int((k * batch).sum())
    if case in ("ties", "bfloat16"):  # equal scores at the cut: the same values kept, not always the same places
        values = pre.transpose(0, 1).reshape(-1, d_sae).float()
        assert sorted(values[r, l].item() for r, l in kept) == sorted(values[r, l].item() for r, l in want)
    else:
        assert kept == want


@pytest.mark.parametrize("k_aux", [2, 10])  # 2: rows with more positive dead latents than k_aux; 10: none
def test_aux_k_cpu_path_keeps_what_the_fixed_shape_path_keeps(k_aux):
    torch.manual_seed(1)
    pre = torch.randn(32, 2, 10, device="cpu")  # a CPU path, whatever device the suite runs on
    dead = torch.zeros(2, 10, dtype=torch.bool, device="cpu")
    dead[0, [1, 4, 7, 8]] = True
    dead[1, [0, 2, 3, 5, 9]] = True
    k = torch.tensor([k_aux, k_aux], device="cpu")

    rows, latents, keep = selection.aux_k(pre, dead, k, k_aux)
    fixed = {(r, l) for r, l, kk in zip(rows.tolist(), latents.tolist(), keep.tolist()) if kk}
    columns, block_keep = selection.dead_block(pre, dead, k)
    block = {(i * 32 + b, columns[i, j].item()) for i, b, j in block_keep.nonzero().tolist()}

    reference = set()
    for i in range(2):
        scores = torch.where(dead[i], pre[:, i], -torch.inf)
        top, index = scores.topk(k_aux, dim=-1)
        reference |= {(i * 32 + b, l) for b in range(32) for v, l in zip(top[b].tolist(), index[b].tolist()) if v > 0}
    assert fixed == block == reference
    assert selection.dead_block(pre, torch.zeros_like(dead), k) is None  # nothing dead


def test_under_bf16_autocast_only_the_selection_is_bf16():
    """The dense selection may run in bf16; the kept entries are scored exactly in float32."""
    torch.manual_seed(0)
    sae = SAE(16, 64, n_instances=2, recipe="topk", seed=0, device=DEVICE, k=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(32, 2, 16)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        pre = sae.centred_pre_activations(x)
        rows, latents, keep = selection.top_k(pre, sae.k.long(), 3)
        code = code_at(sae, x, rows, latents, keep)
    assert pre.dtype == torch.bfloat16 and code.values.dtype == torch.float32
    exact = sae.centred_pre_activations(x).detach().transpose(0, 1).reshape(-1, 64)
    torch.testing.assert_close(code.values.detach(), torch.relu(exact[rows, latents]), rtol=1e-6, atol=1e-6)

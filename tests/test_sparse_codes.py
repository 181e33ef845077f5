"""The sparse training path of TopK and BatchTopK equals the dense formulas, gradients included."""

import pytest
import torch

from toysuper import SAE
from toysuper.sae import sparse_codes
from toysuper.sae.sparse_codes import _cut_from_a_guess, batch_cut, decode_code, top_k_code
from toysuper.sae.state import TrainState


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
    z_aux = torch.relu(dense_top_k(candidates, k_aux))  # every instance here has at least k_aux dead
    e_hat = torch.einsum("bis,isd->bid", z_aux, sae.W_dec)
    aux = ((x - x_hat).detach() - e_hat).pow(2).sum(-1).mean(0)
    return mse + sae.aux_coefficient * aux, acts


@pytest.fixture(params=["sparse", "dense"])
def arithmetic(request, monkeypatch):
    """Run a test with the code computed from its entries (sparse) and with matmuls (dense)."""
    monkeypatch.setattr(sparse_codes, "SPARSE_BELOW", 1 if request.param == "sparse" else 10**9)
    return request.param


@pytest.mark.parametrize("recipe", ["topk", "batchtopk"])
def test_sparse_training_loss_and_gradients_equal_the_dense_formula(recipe, arithmetic):
    torch.manual_seed(0)
    sae = SAE(6, 12, n_instances=2, recipe=recipe, seed=1, device="cpu", k=[2, 3], k_aux=[3, 4])
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(16, 2, 6)
    since_fired = torch.zeros(2, 12)
    since_fired[0, [1, 4, 7, 8]] = 100.0
    since_fired[1, [0, 2, 5, 9, 11]] = 100.0
    state = TrainState(samples_since_fired=since_fired, dead_window=50)
    terms = sae.recipe.loss(sae, x, state)
    terms["loss"].sum().backward()
    sparse_grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    sae.zero_grad()
    reference, acts = dense_reference_loss(sae, x, since_fired >= 50, [2, 3], [3, 4], recipe == "batchtopk")
    reference.sum().backward()
    assert torch.allclose(terms["loss"], reference, atol=1e-5)
    assert torch.allclose(terms["l0"], (acts > 0).float().sum(-1).mean(0))
    assert torch.equal(terms["fired"], (acts > 0).any(0))
    for name, p in sae.named_parameters():
        assert torch.allclose(sparse_grads[name], p.grad, atol=1e-5), name


def test_sparse_code_round_trips_to_dense_and_decodes(arithmetic):
    sae = SAE(4, 5, n_instances=2, recipe="topk", seed=0, device="cpu", k=2)
    x = torch.randn(3, 2, 4)
    pre = sae.centred_pre_activations(x).detach()
    code = top_k_code(sae, x, pre, sae.k.long(), 2)
    assert code.sparse == (arithmetic == "sparse")
    dense = code.to_dense()
    assert torch.allclose(dense, torch.relu(dense_top_k(pre, [2, 2])), atol=1e-6)
    assert torch.allclose(decode_code(sae, code), sae.decode(dense), atol=1e-6)
    assert torch.allclose(decode_code(sae, code, bias=False), sae.decode(dense) - sae.b_dec, atol=1e-6)


def reference_cut(flat, counts):
    """The (row, position) pairs of each row's counts[i] largest positive entries, from a plain topk."""
    pairs = set()
    for i, count in enumerate(counts.tolist()):
        top, index = flat[i].topk(count)
        pairs |= {(i, p) for v, p in zip(top.tolist(), index.tolist()) if v > 0}
    return pairs


def distinct_bf16(rows, n):
    """Rows of n distinct bf16 magnitudes in random order, half negative (rounding randn to bf16 would tie)."""
    bits = torch.stack([0x1000 + torch.randperm(n) for _ in range(rows)]).to(torch.int16)
    return bits.view(torch.bfloat16) * torch.where(torch.rand(rows, n) < 0.5, -1.0, 1.0).bfloat16()


@pytest.mark.parametrize("case", ["random", "raw", "bfloat16", "mostly_zeros", "sorted_rows", "one_row"])
def test_batch_cut_equals_topk_with_and_without_the_shortcut(case):
    torch.manual_seed(0)
    flat = {"random": torch.relu(torch.randn(3, 20_000)),  # the guessed cut applies
            "raw": torch.randn(3, 20_000),  # negative entries are never kept
            "bfloat16": distinct_bf16(3, 20_000),  # compared as bit patterns, without conversion
            "mostly_zeros": torch.zeros(2, 20_000).index_fill_(1, torch.arange(10), 1.0),  # plain topk
            "sorted_rows": torch.randn(2, 20_000).sort(dim=-1).values,  # the strided guess still works
            "one_row": torch.relu(torch.randn(1, 20_000))}[case]
    counts = torch.tensor([500, 300, 400][:len(flat)])
    assert (_cut_from_a_guess(flat, counts, int(counts.max())) is None) == (case == "mostly_zeros")
    row, position = batch_cut(flat, counts, int(counts.max()))
    assert set(zip(row.tolist(), position.tolist())) == reference_cut(flat.float(), counts)
    key = row * flat.shape[1] + position
    assert torch.equal(key, key.sort().values)  # sorted by row, then position


def test_under_bf16_autocast_only_the_selection_is_bf16():
    """The dense selection may run in bf16; the kept entries are re-scored exactly in float32."""
    torch.manual_seed(0)
    sae = SAE(16, 64, n_instances=2, recipe="topk", seed=0, device="cpu", k=3)  # 3 of 64: sparse arithmetic
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(32, 2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre = sae.centred_pre_activations(x)
        code = top_k_code(sae, x, pre, sae.k.long(), 3)
    assert pre.dtype == torch.bfloat16 and code.sparse and code.values.dtype == torch.float32
    exact = sae.centred_pre_activations(x).detach().reshape(-1)
    positions = code.rows * 64 + code.latents % 64
    torch.testing.assert_close(code.values.detach(), torch.relu(exact[positions]), rtol=1e-6, atol=1e-6)

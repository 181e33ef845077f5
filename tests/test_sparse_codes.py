"""The two implementations of sae/codes.py, dense (topk + scatter + matmul) and sparse (fixed-N entries and
segment sums), give the same loss and gradients for every recipe that uses codes, and equal the dense
formulas written out here. Tolerance: 1e-5 absolute and relative (float32 sums in different orders)."""

import pytest
import torch

from toysuper import SAE
from toysuper.sae import codes
from toysuper.sae.state import TrainState
from device import DEVICE

TOLERANCE = dict(atol=1e-5, rtol=1e-5)


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


def small(recipe, **settings):
    torch.manual_seed(0)
    sae = SAE(6, 12, n_instances=2, recipe=recipe, seed=1, device=DEVICE, k=[2, 3], k_aux=[3, 4], **settings)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    return sae


def some_dead(step=0.0, phase=None, steps=1):
    since_fired = torch.zeros(2, 12)
    since_fired[0, [1, 4, 7, 8]] = 100.0
    since_fired[1, [0, 2, 5, 9, 11]] = 100.0
    return TrainState(samples_since_fired=since_fired, dead_window=50, step=torch.tensor(step), steps=steps,
                      phase=phase)


def loss_and_grads(sae, x, state, implementation, monkeypatch):
    monkeypatch.setitem(codes.BY_DEVICE, torch.device(DEVICE).type, implementation)
    sae.zero_grad()
    out = sae.recipe.loss(sae, x, state)
    out.loss.sum().backward()
    return out, {name: p.grad.clone() for name, p in sae.named_parameters()}


CASES = {  # recipe, its settings, the training state
    "topk": ("topk", {}, some_dead()),
    "batchtopk": ("batchtopk", {"topk_warmup": 0.0}, some_dead(phase=2)),
    "batchtopk, warming up": ("batchtopk", {"topk_warmup": 0.5}, some_dead(phase=0, steps=10)),
    "batchtopk, one instance warming up": ("batchtopk", {"topk_warmup": [0.5, 0.0]}, some_dead(phase=1, steps=10)),
    "matryoshka": ("matryoshka", {"smallest_prefix": [0.25, 0.5], "topk_warmup": 0.0}, some_dead(phase=2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dense_and_sparse_codes_give_the_same_loss_and_gradients(case, monkeypatch):
    recipe, settings, state = CASES[case]
    sae = small(recipe, **settings)
    x = torch.randn(16, 2, 6)
    (dense, dense_grads), (sparse, sparse_grads) = (loss_and_grads(sae, x, state, implementation, monkeypatch)
                                                    for implementation in (codes.DENSE, codes.SPARSE))
    assert (dense.terms["auxk"] > 0).all()  # AuxK is compared too
    torch.testing.assert_close(sparse.loss, dense.loss, **TOLERANCE)
    assert sparse.terms.keys() == dense.terms.keys()
    for name, value in dense.terms.items():
        torch.testing.assert_close(sparse.terms[name], value, **TOLERANCE, msg=name)
    assert torch.equal(sparse.fired, dense.fired) and torch.equal(sparse.l0, dense.l0)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(sparse_grads[name], grad, **TOLERANCE, msg=name)


@pytest.mark.parametrize("implementation", ["DENSE", "SPARSE"])
@pytest.mark.parametrize("recipe", ["topk", "batchtopk"])
def test_codes_equal_the_dense_formula(recipe, implementation, monkeypatch):
    sae = small(recipe, **({"topk_warmup": 0.0} if recipe == "batchtopk" else {}))
    x = torch.randn(16, 2, 6)
    state = some_dead(phase=2)
    out, grads = loss_and_grads(sae, x, state, getattr(codes, implementation), monkeypatch)
    sae.zero_grad()
    reference, acts = dense_reference_loss(sae, x, state.dead(), [2, 3], [3, 4], recipe == "batchtopk")
    reference.sum().backward()
    torch.testing.assert_close(out.loss, reference, **TOLERANCE)
    assert torch.allclose(out.l0, (acts > 0).float().sum(-1).mean(0))
    assert torch.equal(out.fired, (acts > 0).any(0))
    for name, p in sae.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, **TOLERANCE, msg=name)


def test_a_sparse_code_restricted_and_decoded_equals_the_dense_one():
    sae = small("topk")
    x = torch.randn(5, 2, 6)
    pre = sae.centred_pre_activations(x)
    chosen = codes.top_k(pre.detach(), sae.k.long(), 3)
    dense, sparse = codes.dense(sae, x, pre, *chosen), codes.sparse(sae, x, pre, *chosen)
    latents = (torch.rand(2, 12) < 0.5).float()
    for bias in (True, False):
        torch.testing.assert_close(sparse.decode(sae, bias), dense.decode(sae, bias), **TOLERANCE)
        torch.testing.assert_close(sparse.only(latents).decode(sae, bias), dense.only(latents).decode(sae, bias),
                                   **TOLERANCE)
    assert torch.equal(dense.acts, torch.relu(dense_top_k(pre.detach(), [2, 3])))
    assert torch.equal(sparse.fired(), dense.fired()) and torch.equal(sparse.l0(), dense.l0())


def test_top_k_among_nothing_is_zero():
    sae = small("topk")
    x = torch.randn(5, 2, 6)
    pre = sae.centred_pre_activations(x)
    nothing = torch.zeros(2, 12, dtype=torch.bool)
    for implementation in (codes.DENSE, codes.SPARSE):
        assert torch.equal(implementation.top_k_among(sae, x, pre, nothing, sae.k_aux.long(), 4),
                           torch.zeros(5, 2, 6))


def test_under_bf16_autocast_the_sparse_code_is_scored_in_float32():
    """The dense selection may run in bf16; the kept entries are scored exactly in float32."""
    torch.manual_seed(0)
    sae = SAE(16, 64, n_instances=2, recipe="topk", seed=0, device=DEVICE, k=3)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(32, 2, 16)
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        pre = sae.centred_pre_activations(x)
        code = codes.sparse(sae, x, pre, *codes.top_k(pre.detach(), sae.k.long(), 3))
    assert pre.dtype == torch.bfloat16 and code.values.dtype == torch.float32
    exact = sae.centred_pre_activations(x).detach().transpose(0, 1).reshape(-1, 64)
    torch.testing.assert_close(code.values.detach(), torch.relu(exact[code.rows, code.latents]),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["random", "mostly_zeros"])
def test_the_guessed_batch_cut_keeps_what_topk_keeps(case):
    """The sparse implementation's batch top-k (a CPU path: its tensors are on the CPU whatever the suite's
    device) ranks only the entries above a guessed cut; where the guess cannot work, it falls back to topk."""
    torch.manual_seed(0)
    with torch.device("cpu"):
        pre = {"random": torch.randn(40, 3, 700),
               "mostly_zeros": torch.zeros(40, 3, 700).index_fill_(2, torch.arange(3), 1.0)}[case]
        k = torch.tensor([6, 3, 4])
    positions, keep = codes.guessed_batch_top_k(pre, k, 6)
    want_positions, want_keep = codes.batch_top_k(pre, k, 6)
    assert positions.shape == want_positions.shape == (3, 6 * 40)
    assert torch.equal(positions, positions.sort().values) == (case == "random")  # guessed: ascending

    def kept(positions, keep):
        return {(i, p) for i, row in enumerate(positions.tolist()) for p, kk in zip(row, keep[i].tolist()) if kk}
    assert kept(positions, keep) == kept(want_positions, want_keep)
    assert len(kept(positions, keep)) == (int((k * 40).sum()) if case == "random" else 3 * 40 * 3)

import math

import pytest
import torch

from toysuper import FeatureDistribution, ToyModel, train_toy_model
from toysuper.toy import superposition
from toysuper.toy.model import importance_weighted_mse
from device import DEVICE


def _block_diag(*blocks):
    """Rows are features; each block lives in its own orthogonal set of hidden dimensions."""
    return torch.block_diag(*blocks).double().unsqueeze(0)


def _polygon(k):
    angles = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    return torch.stack([angles.cos(), angles.sin()], -1)


def test_feature_dimensionality_of_known_geometries():
    tetrahedron = torch.tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    blocks = [torch.ones(1, 1), torch.tensor([[1.0], [-1.0]]), _polygon(3), tetrahedron, _polygon(5)]
    W = _block_diag(*blocks)
    expected = [1.0] + [1 / 2] * 2 + [2 / 3] * 3 + [3 / 4] * 4 + [2 / 5] * 5
    D = superposition.feature_dimensionality(W)[0]
    assert torch.allclose(D, torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=0)
    # interference: an orthogonal feature has none; an antipodal pair's partner contributes 1
    I = superposition.interference(W)[0]
    assert I[0].item() == pytest.approx(0.0, abs=1e-12)
    assert I[1].item() == pytest.approx(1.0, abs=1e-12)


def test_dimensions_per_feature_formula():
    W = torch.zeros(1, 6, 3)
    W[0, :3] = torch.eye(3) * 2  # ||W||_F^2 = 12
    assert superposition.dimensions_per_feature(W).item() == pytest.approx(3 / 12)
    assert superposition.represented(W)[0].tolist() == [True] * 3 + [False] * 3


def test_dense_regime_keeps_exactly_the_five_most_important_features():
    """Elhage et al. 2022: n=20, m=5, importance 0.7^i, S=0 -> features 0-4 orthogonal, D* = 1."""
    importance = 0.7 ** torch.arange(20)
    dist = FeatureDistribution.sparsity_sweep(20, [0.0, 0.999], importance=importance, device=DEVICE)
    model = ToyModel(20, 5, n_instances=2, device=DEVICE)
    train_toy_model(model, dist, steps=4000, lr=3e-3, quiet=True)
    dense, sparse = model.represented()
    assert dense.nonzero().squeeze(-1).tolist() == [0, 1, 2, 3, 4]
    assert model.dimensions_per_feature()[0].item() == pytest.approx(1.0, abs=0.02)
    # the sparse regime packs clearly more than five features into five dimensions,
    # and the represented ones are the most important
    assert sparse.sum() >= 9
    assert sparse[:5].all()
    assert model.dimensions_per_feature()[1].item() < 0.6


def test_pentagon_in_two_dimensions():
    """n=5, m=2, equal importance, S=0.9: five features at 72° (judge the lowest-loss instance)."""
    dist = FeatureDistribution(5, sparsity=0.9, n_instances=8, device=DEVICE)
    model = ToyModel(5, 2, n_instances=8, seed=1, device=DEVICE)
    result = train_toy_model(model, dist, steps=4000, lr=3e-3, quiet=True)
    best = result.final_loss.argmin()
    assert model.represented()[best].all()
    W = model.W.detach()[best]
    angles = torch.atan2(W[:, 1], W[:, 0]).sort().values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * math.pi])) * 180 / math.pi
    assert torch.allclose(gaps, torch.full((5,), 72.0), atol=3.0)
    assert torch.allclose(model.feature_dimensionality()[best], torch.full((5,), 0.4), atol=0.03)


def test_toy_model_kinds_and_errors():
    x = torch.rand(4, 2, 3)
    for kind in ("linear", "relu_output", "hidden_relu"):
        model = ToyModel(3, 2, n_instances=2, kind=kind, device=DEVICE)
        assert model(x).shape == (4, 2, 3) and model.hidden(x).shape == (4, 2, 2)
    linear = ToyModel(3, 2, n_instances=2, kind="linear", device=DEVICE)
    expected = torch.einsum("bif,ifd,ijd->bij", x, linear.W, linear.W) + linear.b
    assert torch.allclose(linear(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        ToyModel(3, 2, kind="quadratic", device=DEVICE)
    with pytest.raises(ValueError, match="n_features"):
        train_toy_model(ToyModel(3, 2, device=DEVICE), FeatureDistribution(4, 0.1, device=DEVICE), steps=1)


def test_nan_loss_stops_training_with_a_clear_error():
    dist = FeatureDistribution(3, 0.5, device=DEVICE)
    model = ToyModel(3, 2, device=DEVICE)
    with torch.no_grad():
        model.b.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        train_toy_model(model, dist, steps=5, quiet=True)


def test_the_zoo_follows_the_papers_formulas_per_instance():
    """linear x' = WᵀWx + b; relu_output x' = ReLU(WᵀWx + b); hidden_relu h = ReLU(Wx), x' = ReLU(Wᵀh + b)."""
    x = torch.randn(6, 3, 4, generator=torch.Generator(DEVICE).manual_seed(0))
    for kind in ("linear", "relu_output", "hidden_relu"):
        model = ToyModel(4, 2, n_instances=3, kind=kind, seed=1, device=DEVICE)
        with torch.no_grad():
            model.b.normal_(generator=torch.Generator(DEVICE).manual_seed(2))
            for k in range(3):  # each instance on its own, no batching tricks
                W, b = model.W[k].T, model.b[k]  # the paper's W is (m, n)
                h = x[:, k] @ W.T
                h = torch.relu(h) if kind == "hidden_relu" else h
                out = h @ W + b
                out = out if kind == "linear" else torch.relu(out)
                assert torch.allclose(model(x)[:, k], out, atol=1e-6), kind
                assert torch.allclose(model.hidden(x)[:, k], h, atol=1e-6), kind


def test_superposition_measures_have_an_instances_axis():
    """Instance 0: orthonormal pair (D_i = 1, no interference); instance 1: antipodal pair of norm 2."""
    W = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [-2.0, 0.0]]])
    assert superposition.feature_dimensionality(W).tolist() == [[1.0, 1.0], [0.5, 0.5]]
    assert superposition.interference(W).tolist() == [[0.0, 0.0], [4.0, 4.0]]
    assert superposition.dimensions_per_feature(W).tolist() == [1.0, 0.25]
    assert superposition.feature_norms(W).tolist() == [[1.0, 1.0], [2.0, 2.0]]


@pytest.mark.parametrize("kind", ["linear", "relu_output", "hidden_relu"])
def test_the_loss_is_the_papers_formula(kind):
    model = ToyModel(7, 3, n_instances=4, kind=kind, seed=1, device=DEVICE)
    with torch.no_grad():
        model.b.normal_(0, 0.3)  # some outputs below zero, so the output ReLU matters
    dist = FeatureDistribution(7, 0.4, n_instances=4, importance=0.8 ** torch.arange(7), device=DEVICE)
    x = dist.sample(64, torch.Generator(DEVICE).manual_seed(2))
    for i in range(4):  # instance by instance, sample by sample: h = W x, x' = Wᵀ h + b with the kind's ReLUs
        W, b = model.W[i].detach().T, model.b[i].detach()  # W: (m, n), the paper's orientation
        total = 0.0
        for sample in x[:, i]:
            h = W @ sample
            h = h.relu() if kind == "hidden_relu" else h
            out = W.T @ h + b
            out = out if kind == "linear" else out.relu()
            total += (dist.importance[i] * (sample - out).pow(2)).sum()
        assert importance_weighted_mse(model, x, dist.importance)[i].item() == pytest.approx(total.item() / 64,
                                                                                              rel=1e-5)


def test_a_saved_toy_model_loads_back(tmp_path):
    import json

    model = ToyModel(6, 2, n_instances=3, kind="hidden_relu", seed=4, device=DEVICE)
    with torch.no_grad():
        model.b.normal_()
    loaded = ToyModel.load(model.save(tmp_path / "toy"), device=DEVICE)
    assert (loaded.kind, loaded.n_features, loaded.d_hidden, loaded.n_instances) == ("hidden_relu", 6, 2, 3)
    assert torch.equal(loaded.W, model.W) and torch.equal(loaded.b, model.b)
    x = torch.rand(5, 3, 6)
    assert torch.equal(loaded(x), model(x))
    config = json.loads((tmp_path / "toy" / "config.json").read_text())
    (tmp_path / "toy" / "config.json").write_text(json.dumps({**config, "d_hidden": 3}))
    with pytest.raises(ValueError, match="do not fit its config.json"):
        ToyModel.load(tmp_path / "toy")
    with pytest.raises(ValueError, match="cannot load a toy model"):
        ToyModel.load(tmp_path / "nowhere")

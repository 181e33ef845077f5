import pytest
import torch

from toysuper import FeatureDistribution


def test_sample_shape_and_firing_rate_per_instance():
    dist = FeatureDistribution.sparsity_sweep(50, [0.0, 0.5, 0.9], device="cpu")
    x = dist.sample(20_000, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 3, 50)
    rate = (x > 0).float().mean((0, 2))
    assert torch.allclose(rate, torch.tensor([1.0, 0.5, 0.1]), atol=0.01)
    assert x.min() >= 0 and x.max() <= 1
    # magnitudes of firing features are U[0, 1]: mean 1/2
    assert abs(x[:, 0].mean().item() - 0.5) < 0.01


def test_per_feature_probabilities_and_importance_broadcast():
    p = torch.tensor([0.0, 0.25, 1.0])
    dist = FeatureDistribution(3, p, n_instances=2, importance=[1.0, 0.5, 0.25], device="cpu")
    x = dist.sample(10_000, torch.Generator().manual_seed(1))
    rate = (x > 0).float().mean(0)
    assert torch.allclose(rate, p.expand(2, 3), atol=0.02)
    assert dist.importance.shape == (2, 3) and dist.importance[1, 2] == 0.25
    assert torch.allclose(dist.expected_l0(), torch.tensor([1.25, 1.25]))


def test_same_seed_same_samples():
    dist = FeatureDistribution(10, 0.3, n_instances=2, device="cpu")
    a = dist.sample(64, torch.Generator().manual_seed(7))
    b = dist.sample(64, torch.Generator().manual_seed(7))
    c = dist.sample(64, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, name", [
    ({"firing_prob": -0.1}, "firing_prob"),
    ({"firing_prob": 1.5}, "firing_prob"),
    ({"sparsity": [0.5, float("nan")]}, "sparsity"),
    ({"sparsity": -1.0}, "sparsity"),
    ({"firing_prob": [0.1, 0.2]}, "firing_prob"),  # wrong shape for 4 features
    ({"firing_prob": 0.1, "importance": -1.0}, "importance"),
])
def test_bad_probabilities_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FeatureDistribution(4, device="cpu", **kwargs)


def test_exactly_one_of_firing_prob_and_sparsity():
    with pytest.raises(ValueError, match="exactly one"):
        FeatureDistribution(4, 0.1, sparsity=0.9, device="cpu")
    with pytest.raises(ValueError, match="n_features"):
        FeatureDistribution(0, 0.1, device="cpu")

import math

import pytest
import torch

from toysuper import DictionarySource, FeatureDistribution
from toysuper.truth.dictionaries import Dictionary, low_coherence_directions, max_abs_cos, random_directions, welch_bound


def test_random_directions_are_unit_and_seeded():
    a = random_directions(30, 8, n_instances=2, seed=3, device="cpu")
    assert a.shape == (2, 30, 8)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2, 30), atol=1e-6)
    assert torch.equal(a, random_directions(30, 8, n_instances=2, seed=3, device="cpu"))
    assert not torch.equal(a, random_directions(30, 8, n_instances=2, seed=4, device="cpu"))


def test_max_abs_cos_on_known_geometries():
    angles = torch.arange(5, dtype=torch.float64) * 2 * math.pi / 5
    pentagon = torch.stack([angles.cos(), angles.sin()], -1)
    # neighbours sit at 72° (cos 0.309) but next-but-one at 144°: |cos 144°| = 0.809 is the largest overlap
    assert max_abs_cos(pentagon).item() == pytest.approx(-math.cos(math.radians(144)), abs=1e-12)
    assert max_abs_cos(3 * torch.eye(4, dtype=torch.float64)).item() == 0.0
    antipodal = torch.tensor([[[1.0, 0.0], [-2.0, 0.0]]])
    assert max_abs_cos(antipodal).tolist() == [1.0]


def test_welch_bound():
    assert welch_bound(64, 16) == pytest.approx(math.sqrt(48 / (16 * 63)))
    assert welch_bound(8, 8) == 0.0


def test_low_coherence_beats_random_and_nears_the_welch_bound():
    n, d = 32, 8
    result = low_coherence_directions(n, d, n_instances=2, seed=0, steps=250, device="cpu")
    assert isinstance(result, Dictionary)
    assert result.directions.shape == (2, n, d)
    assert torch.allclose(result.directions.norm(dim=-1), torch.ones(2, n), atol=1e-5)
    # the reported coherence is the achieved one
    assert torch.allclose(result.max_abs_cos, max_abs_cos(result.directions), atol=1e-6)
    random = max_abs_cos(random_directions(n, d, n_instances=2, seed=0, device="cpu"))
    assert (result.max_abs_cos < 0.6 * random).all()
    assert result.welch_bound == pytest.approx(welch_bound(n, d))
    assert (result.max_abs_cos < 1.5 * result.welch_bound).all()


def test_low_coherence_with_room_to_spare_is_orthonormal():
    result = low_coherence_directions(6, 10, device="cpu")
    assert result.max_abs_cos.item() < 1e-6 and result.welch_bound == 0.0


def test_dictionary_source_takes_a_dictionary_or_user_directions():
    dist = FeatureDistribution(6, 0.2, device="cpu")
    result = low_coherence_directions(6, 3, steps=50, device="cpu")
    source = DictionarySource(result, dist)
    assert torch.allclose(source.true_directions(), result.directions, atol=1e-6)
    user = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0, 1, 1], [1, 0, 1]])
    source = DictionarySource(user, dist)
    assert torch.allclose(source.true_directions()[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    batch = source.sample(8, torch.Generator().manual_seed(0))
    assert torch.allclose(batch.hidden[:, 0], batch.features[:, 0] @ user)
    with pytest.raises(ValueError, match="directions"):
        DictionarySource(user[:5], dist)


@pytest.mark.parametrize("kwargs, name", [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"d_hidden": 0}, "d_hidden")])
def test_low_coherence_bad_arguments(kwargs, name):
    args = {"n_features": 8, "d_hidden": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        low_coherence_directions(device="cpu", **args)


@pytest.mark.parametrize("firing_prob, noise, n_instances, sampling", [
    (0.02, 0.0, 3, "auto"), (0.02, 0.1, 3, "auto"), (0.5, 0.0, 3, "auto"), (0.02, 0.0, 1, "sparse"),
    (torch.linspace(0.005, 0.05, 200), 0.0, 3, "auto"),  # per-feature rates: hits come column by column, unsorted
])
def test_dictionary_source_sparse_and_dense_paths_agree(firing_prob, noise, n_instances, sampling):
    """Sparse draws build h = f D from the active features only; dense ones by matmul: both equal f D."""
    directions = torch.randn(n_instances, 200, 16)
    source = DictionarySource(directions, FeatureDistribution(200, firing_prob, n_instances=n_instances,
                                                              sampling=sampling, device="cpu"), noise=noise)
    assert source.dist.draws_sparse(64) == (float(torch.as_tensor(firing_prob).mean()) < 0.08)
    batch = source.sample(64, torch.Generator().manual_seed(5))
    hidden = source.sample_hidden(64, torch.Generator().manual_seed(5))
    assert torch.equal(hidden, batch.hidden)  # the same draw with or without the dense features
    if noise == 0:
        assert torch.allclose(batch.hidden, torch.einsum("bif,ifd->bid", batch.features, directions), atol=1e-5)
    else:
        residual = batch.hidden - torch.einsum("bif,ifd->bid", batch.features, directions)
        assert residual.std().item() == pytest.approx(noise, rel=0.15)

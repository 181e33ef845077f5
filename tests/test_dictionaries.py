import math

import pytest
import torch

from toysuper import DictionarySource, FeatureDistribution
from toysuper.truth.dictionaries import Dictionary, low_coherence_directions, max_abs_cos, random_directions, welch_bound
from device import DEVICE


def test_random_directions_are_unit_and_seeded():
    a = random_directions(30, 8, n_instances=2, seed=3, device=DEVICE)
    assert a.shape == (2, 30, 8)
    assert torch.allclose(a.norm(dim=-1), torch.ones(2, 30), atol=1e-6)
    assert torch.equal(a, random_directions(30, 8, n_instances=2, seed=3, device=DEVICE))
    assert not torch.equal(a, random_directions(30, 8, n_instances=2, seed=4, device=DEVICE))


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
    result = low_coherence_directions(n, d, n_instances=2, seed=0, steps=250, device=DEVICE)
    assert isinstance(result, Dictionary)
    assert result.directions.shape == (2, n, d)
    assert torch.allclose(result.directions.norm(dim=-1), torch.ones(2, n), atol=1e-5)
    # the reported coherence is the achieved one
    assert torch.allclose(result.max_abs_cos, max_abs_cos(result.directions), atol=1e-6)
    random = max_abs_cos(random_directions(n, d, n_instances=2, seed=0, device=DEVICE))
    assert (result.max_abs_cos < 0.6 * random).all()
    assert result.welch_bound == pytest.approx(welch_bound(n, d))
    assert (result.max_abs_cos < 1.5 * result.welch_bound).all()


def test_low_coherence_with_room_to_spare_is_orthonormal():
    result = low_coherence_directions(6, 10, device=DEVICE)
    assert result.max_abs_cos.item() < 1e-6 and result.welch_bound == 0.0


def test_dictionary_source_takes_a_dictionary_or_user_directions():
    dist = FeatureDistribution(6, 0.2, device=DEVICE)
    result = low_coherence_directions(6, 3, steps=50, device=DEVICE)
    source = DictionarySource(result, dist)
    assert torch.allclose(source.true_directions(), result.directions, atol=1e-6)
    user = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0, 1, 1], [1, 0, 1]])
    source = DictionarySource(user, dist)
    assert torch.allclose(source.true_directions()[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    batch = source.sample(8, torch.Generator(DEVICE).manual_seed(0))
    assert torch.allclose(batch.hidden[:, 0], batch.features[:, 0] @ user)
    with pytest.raises(ValueError, match="directions"):
        DictionarySource(user[:5], dist)


@pytest.mark.parametrize("kwargs, name", [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"d_hidden": 0}, "d_hidden")])
def test_low_coherence_bad_arguments(kwargs, name):
    args = {"n_features": 8, "d_hidden": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        low_coherence_directions(device=DEVICE, **args)


@pytest.mark.parametrize("firing_prob, noise, n_instances, sampling", [
    (0.02, 0.0, 3, "auto"), (0.02, 0.1, 3, "auto"), (0.5, 0.0, 3, "auto"), (0.02, 0.0, 1, "dense"),
    (torch.linspace(0.005, 0.4, 200), 0.0, 3, "auto"),  # events for the rare, dense slots for the rest
    (torch.tensor([[0.5], [0.01], [0.0]]), 0.1, 3, "auto"),  # one instance dense, one by events, one silent
])
def test_dictionary_source_hidden_is_f_d_from_the_same_draw(firing_prob, noise, n_instances, sampling):
    """Events build h = f D by a gather-and-sum, dense slots by a matmul: both equal f D."""
    directions = torch.randn(n_instances, 200, 16)
    bias = torch.randn(16)
    source = DictionarySource(directions, FeatureDistribution(200, firing_prob, n_instances=n_instances,
                                                              sampling=sampling, device=DEVICE), noise=noise, bias=bias)
    batch = source.sample(64, torch.Generator(DEVICE).manual_seed(5))
    hidden = source.sample_hidden(64, torch.Generator(DEVICE).manual_seed(5))
    assert torch.equal(hidden, batch.hidden)  # the same draw with or without the dense features
    residual = batch.hidden - torch.einsum("bif,ifd->bid", batch.features, directions) - bias
    if noise == 0:
        assert residual.abs().max() < 1e-4
    else:
        assert residual.std().item() == pytest.approx(noise, rel=0.15)


def test_dictionary_source_transform_compiles_whole_and_matches_eager():
    dist = FeatureDistribution(300, torch.linspace(0.001, 0.5, 300), n_instances=2, device=DEVICE)
    source = DictionarySource(torch.randn(300, 8), dist, noise=0.1, bias=torch.ones(2, 8))
    numbers = source.numbers(32, torch.Generator(DEVICE).manual_seed(0))
    hidden, drawn = source.transform(numbers)
    compiled = torch.compile(source.transform, fullgraph=True, dynamic=False, backend="aot_eager")(numbers)
    assert torch.allclose(compiled[0], hidden, atol=1e-6) and torch.equal(compiled[1].value, drawn.value)


def test_dictionary_source_bias_is_checked():
    dist = FeatureDistribution(4, 0.5, device=DEVICE)
    with pytest.raises(ValueError, match="bias"):
        DictionarySource(torch.eye(4), dist, bias=torch.ones(3))
    with pytest.raises(ValueError, match="bias"):
        DictionarySource(torch.eye(4), dist, bias=torch.tensor([0.0, float("nan"), 0.0, 0.0]))

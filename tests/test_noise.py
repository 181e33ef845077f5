"""Gaussian noise in hidden space at a stated signal-to-noise ratio."""

import pytest
import torch

from toysuper import DictionarySource, FeatureDistribution, ToyModel, ToyModelSource
from toysuper.truth.dictionaries import random_directions
from toysuper.truth.groups import CorrelatedGroups
from device import DEVICE


def _measured_snr(signal: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """E||s||² / E||h - s||² per instance."""
    return signal.pow(2).sum(-1).mean(0) / (hidden - signal).pow(2).sum(-1).mean(0)


@pytest.mark.parametrize("snr", [0.5, 4.0])
def test_dictionary_source_achieves_the_stated_snr(snr):
    directions = random_directions(40, 10, seed=0, device=DEVICE)[0] * torch.linspace(0.5, 2.0, 40)[:, None]
    dist = FeatureDistribution(40, torch.tensor([[0.1], [0.3]]), n_instances=2,
                               correlated_groups=CorrelatedGroups.consecutive(5, 4, correlation=0.6), device=DEVICE)
    source = DictionarySource(directions, dist, snr=snr, snr_samples=16_384)
    batch = source.sample(50_000, torch.Generator(DEVICE).manual_seed(1))
    signal = torch.einsum("bif,fd->bid", batch.features, directions)
    measured = _measured_snr(signal, batch.hidden)
    assert torch.allclose(measured, torch.full((2,), snr), rtol=0.03)
    # the sparser instance has less signal power, so less noise
    assert source.noise_std[0] < source.noise_std[1]
    # and the noise is isotropic Gaussian: equal variance in every hidden direction
    per_dim = (batch.hidden - signal)[:, 1].var(0)
    assert torch.allclose(per_dim, source.noise_std[1].pow(2).expand(10), rtol=0.05)


def test_toy_model_source_achieves_the_stated_snr_per_source_instance():
    model = ToyModel(12, 4, n_instances=2, seed=0, device=DEVICE)
    dist = FeatureDistribution.sparsity_sweep(12, [0.5, 0.8], device=DEVICE)
    source = ToyModelSource(model, dist, instances=[1, 0, 1], snr=2.0, snr_samples=16_384)
    batch = source.sample(50_000, torch.Generator(DEVICE).manual_seed(2))
    # source instance k reads model instance [1, 0, 1][k]; a relu_output model's hidden vector is W x
    signal = torch.einsum("bif,ifd->bid", batch.features, model.W.detach()[[1, 0, 1]])
    assert torch.allclose(_measured_snr(signal, batch.hidden), torch.full((3,), 2.0), rtol=0.03)
    assert ToyModelSource(model, dist).noise_std is None


def test_plain_noise_std_is_unchanged_and_snr_errors_are_clear():
    dist = FeatureDistribution(4, 0.5, device=DEVICE)
    source = DictionarySource(torch.eye(4), dist, noise=0.1)
    assert source.noise_std.tolist() == pytest.approx([0.1])
    batch = source.sample(50_000, torch.Generator(DEVICE).manual_seed(0))
    assert (batch.hidden - batch.features).std().item() == pytest.approx(0.1, rel=0.02)
    with pytest.raises(ValueError, match="snr"):
        DictionarySource(torch.eye(4), dist, snr=0.0)
    with pytest.raises(ValueError, match="not both"):
        DictionarySource(torch.eye(4), dist, noise=0.1, snr=2.0)
    with pytest.raises(TypeError, match="snr"):
        DictionarySource(torch.eye(4), dist, snr="loud")

import json

import pytest
import torch

from toysuper import SAE, DictionarySource, FeatureDistribution, evaluate, random_directions, train_sae
from toysuper.sae import TrainState
from toysuper.sources import Batch
from device import DEVICE


def test_forward_pass_is_the_formula():
    sae = SAE(3, 4, n_instances=2, seed=1, device=DEVICE)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_()
    x = torch.randn(5, 2, 3)
    f = torch.relu(torch.einsum("bid,ids->bis", x, sae.W_enc) + sae.b_enc)
    assert torch.allclose(sae.encode(x), f)
    assert torch.allclose(sae(x), torch.einsum("bis,isd->bid", f, sae.W_dec) + sae.b_dec, atol=1e-6)


def test_loss_is_mse_plus_decoder_norm_weighted_l1_per_instance():
    sae = SAE(3, 4, n_instances=2, seed=2, device=DEVICE, l1_coefficient=[0.5, 2.0])
    x = torch.randn(7, 2, 3)
    terms = sae.recipe.loss(sae, x)  # outside training: past the λ warm-up
    f = sae.encode(x)
    mse = (x - sae(x)).pow(2).sum(-1).mean(0)
    l1 = (f * sae.W_dec.norm(dim=-1)).sum(-1).mean(0)
    assert torch.allclose(terms.loss, mse + torch.tensor([0.5, 2.0]) * l1)
    warming = sae.recipe.loss(sae, x, TrainState(step=torch.tensor(25.0), steps=1000))  # half-way through the 5% warm-up
    assert torch.allclose(warming.loss, mse + 0.5 * torch.tensor([0.5, 2.0]) * l1)


def test_tied_init():
    sae = SAE(6, 10, n_instances=3, seed=0, device=DEVICE)
    assert torch.allclose(sae.W_enc, sae.W_dec.transpose(-1, -2))
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.full((3, 10), 0.1))


def test_sae_recovers_a_small_planted_dictionary():
    directions = random_directions(32, 16, seed=0, device=DEVICE)[0]
    source = DictionarySource(directions, FeatureDistribution(32, 0.05, device=DEVICE))
    sae = SAE(16, 64, seed=0, device=DEVICE)  # the recipe's tuned default λ (inputs are rescaled)
    result = train_sae(sae, source, steps=2000, batch_size=512, lr=3e-3, quiet=True)
    report = evaluate(sae, source, n_samples=10_000)
    assert report.summary["recovered@0.9"][0] >= 0.9
    assert report.summary["activation_mcc"][0] >= 0.8
    history = result.history
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_instances_train_independently():
    """Each instance's λ only affects that instance: a larger λ gives a sparser code."""
    directions = random_directions(32, 16, seed=0, device=DEVICE)[0]
    source = DictionarySource(directions, FeatureDistribution(32, 0.05, n_instances=2, device=DEVICE))
    sae = SAE(16, 64, n_instances=2, seed=0, device=DEVICE, l1_coefficient=[0.05, 1.0])
    train_sae(sae, source, steps=600, batch_size=512, lr=3e-3, quiet=True)
    l0 = evaluate(sae, source, n_samples=4000).summary["l0"]
    assert l0[0] > 2 * l0[1]


def test_bad_input_names_the_parameter():
    with pytest.raises(ValueError, match="d_sae"):
        SAE(4, 0, device=DEVICE)
    with pytest.raises(ValueError, match="recipe"):
        SAE(4, 4, recipe="magic", device=DEVICE)
    with pytest.raises(ValueError, match="l1_coefficient"):
        SAE(4, 4, n_instances=2, device=DEVICE, l1_coefficient=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="warmup"):
        SAE(4, 4, device=DEVICE, warmup=3)


class _NaNSource:
    n_instances, n_features, d_hidden, device = 1, 2, 3, torch.device(DEVICE)

    def sample(self, batch_size, generator=None):
        hidden = torch.randn(batch_size, 1, 3)
        hidden[0, 0, 0] = float("nan")
        return Batch(hidden, torch.zeros(batch_size, 1, 2))


def test_nan_activations_raise_a_clear_error():
    sae = SAE(3, 4, device=DEVICE)
    before = sae.W_dec.detach().clone()
    with pytest.raises(ValueError, match="hidden activations contains 1 NaN"):
        train_sae(sae, _NaNSource(), steps=3, quiet=True)
    assert torch.equal(sae.W_dec, before)


def test_save_load_round_trip(tmp_path):
    sae = SAE(5, 7, n_instances=2, seed=3, device=DEVICE, l1_coefficient=[0.1, 0.2])
    sae.save(tmp_path / "sae")
    assert json.loads((tmp_path / "sae" / "config.json").read_text())["l1_coefficient"] == pytest.approx([0.1, 0.2])
    loaded = SAE.load(tmp_path / "sae", device=DEVICE)
    x = torch.randn(4, 2, 5)
    assert torch.equal(loaded(x), sae(x))
    assert torch.equal(loaded.l1_coefficient, sae.l1_coefficient)


def test_load_rejects_corrupt_and_mismatched_files(tmp_path):
    SAE(5, 7, device=DEVICE).save(tmp_path / "a")
    (tmp_path / "a" / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load"):
        SAE.load(tmp_path / "a", device=DEVICE)
    SAE(5, 7, device=DEVICE).save(tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["d_sae"] = 8
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not fit"):
        SAE.load(tmp_path / "b", device=DEVICE)
    with pytest.raises(ValueError, match="cannot load"):
        SAE.load(tmp_path / "missing", device=DEVICE)

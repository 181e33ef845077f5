"""Grading any SAE: the protocol, plain tensors, objects with W_dec, and SAELens's on-disk format
(read and written here without SAELens; tests/test_saelens_bridge.py checks it against SAELens)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from toysuper import (RECIPES, SAE, DictionarySource, FeatureDistribution, OneInstance, TensorSAE, evaluate, load_saelens,
                      random_directions, save_saelens)
from toysuper.grade.external import as_gradeable
from toysuper.sae.recipes import Recipe, recipe_path

EXPORTABLE = sorted(name for name, recipe in RECIPES.items() if recipe.saelens_export and recipe_path(recipe) == name)
from device import DEVICE


def _source(n_instances=1, n=12, d=10, seed=0):
    dist = FeatureDistribution(n, 0.1, n_instances=n_instances, device=DEVICE)
    return DictionarySource(random_directions(n, d, n_instances, seed=seed, device=DEVICE), dist)


def _noisy_sae(source, d_sae=16, seed=1):
    """A toysuper SAE whose decoder is a noised copy of the truth plus random rows."""
    sae = SAE(source.d_hidden, d_sae, source.n_instances, device=DEVICE, seed=seed)
    generator = torch.Generator(DEVICE).manual_seed(seed)
    with torch.no_grad():
        truth = source.true_directions()
        sae.W_dec[:, : source.n_features] = truth + 0.1 * torch.randn(truth.shape, generator=generator)
        sae.W_enc.copy_(sae.W_dec.transpose(-1, -2))
        sae.b_enc.fill_(-0.05)
        sae.b_dec.normal_(0, 0.1, generator=generator)
    return sae


def _same_report(a, b):
    pd.testing.assert_frame_equal(a.summary, b.summary)
    pd.testing.assert_frame_equal(a.features, b.features)
    pd.testing.assert_frame_equal(a.latents, b.latents)


def test_tensors_tuple_and_w_dec_objects_grade_like_the_sae_itself():
    source = _source(n_instances=2)
    sae = _noisy_sae(source)
    reference = evaluate(sae, source, n_samples=3000)
    as_tensors = TensorSAE(sae.W_dec.detach(), sae.encode, sae.decode)
    _same_report(reference, evaluate(as_tensors, source, n_samples=3000))
    _same_report(reference, evaluate((sae.W_dec.detach(), sae.encode, sae.decode), source, n_samples=3000))

    class WithWdec:  # e.g. an SAE object of another library
        W_dec = sae.W_dec
        encode, decode = sae.encode, sae.decode

    _same_report(reference, evaluate(WithWdec(), source, n_samples=3000))
    without_decode = evaluate((sae.W_dec.detach(), sae.encode), source, n_samples=3000)
    assert without_decode.summary["mse"].isna().all() and without_decode.summary["fvu"].isna().all()
    assert np.allclose(without_decode.summary["hungarian_cos"], reference.summary["hungarian_cos"])


def test_a_single_sae_without_instances_axis_grades_one_instance():
    source = _source(n_instances=3)
    sae = _noisy_sae(source)
    reference = evaluate(sae, source, n_samples=3000)
    W_enc, b_enc, W_dec = sae.W_enc[1].detach(), sae.b_enc[1].detach(), sae.W_dec[1].detach()
    single = TensorSAE(W_dec, lambda x: torch.relu(x @ W_enc + b_enc), lambda a: a @ W_dec + sae.b_dec[1].detach())
    report = evaluate(single, OneInstance(source, 1), n_samples=3000)
    assert report.summary["hungarian_cos"][0] == pytest.approx(reference.summary["hungarian_cos"][1])
    assert report.features["matched_latent"].tolist() == \
        reference.features.query("instance == 1")["matched_latent"].tolist()
    with pytest.raises(ValueError, match="n_instances"):
        evaluate(single, source)  # one SAE, three instances


def test_bad_saes_are_refused_with_their_shape_named():
    source = _source()
    with pytest.raises(TypeError, match="sae must be"):
        evaluate(object(), source)
    named = r"encode returned shape \(\d+, 5\) for input \(\d+, 10\); expected \(\d+, 16\)"  # what the SAE saw
    with pytest.raises(ValueError, match=named):
        evaluate((torch.randn(16, 10), lambda x: torch.zeros(x.shape[0], 5)), source, n_samples=100)
    with pytest.raises(TypeError, match="decoder"):
        TensorSAE(np.zeros((4, 3)), lambda x: x)
    with pytest.raises(ValueError, match="not a directory holding an SAE"):
        as_gradeable("/nonexistent/dir")


def test_save_saelens_round_trips_and_grades_identically(tmp_path):
    source = _source(n_instances=2)
    sae = _noisy_sae(source)
    directory = save_saelens(sae, tmp_path / "sae", instance=1)
    config = json.loads((directory / "cfg.json").read_text())
    assert (config["architecture"], config["d_in"], config["d_sae"]) == ("standard", 10, 16)
    assert config["apply_b_dec_to_input"] is False  # our recipe encodes x itself, not x - b_dec
    loaded = load_saelens(directory)
    x = source.sample(64, torch.Generator(DEVICE).manual_seed(2)).hidden
    assert torch.allclose(loaded.encode(x[:, 1]), sae.encode(x)[:, 1], atol=1e-6)
    assert torch.allclose(loaded.decode(loaded.encode(x[:, 1])), sae(x)[:, 1], atol=1e-6)
    one = OneInstance(source, 1)
    _same_report(evaluate(loaded, one, n_samples=2000), evaluate(str(directory), one, n_samples=2000))
    ours = evaluate(sae, source, n_samples=2000)
    assert evaluate(directory, one, n_samples=2000).summary["hungarian_cos"][0] == \
        pytest.approx(ours.summary["hungarian_cos"][1])
    sae.save(tmp_path / "ours")  # toysuper's own format is read from a directory too
    _same_report(ours, evaluate(tmp_path / "ours", source, n_samples=2000))
    with pytest.raises(ValueError, match="instance"):
        save_saelens(sae, tmp_path / "bad", instance=2)


def _perturbed_sae(recipe):
    """A toysuper SAE of `recipe` with every weight moved off its initial value."""
    sae = SAE(8, 20, n_instances=2, recipe=recipe, device=DEVICE)
    generator = torch.Generator(DEVICE).manual_seed(4)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
        if recipe in ("batchtopk", "matryoshka"):
            sae.threshold.fill_(0.2)
    return sae


@pytest.mark.parametrize("recipe", EXPORTABLE)
def test_every_exportable_recipe_round_trips_through_the_saelens_format(tmp_path, recipe):
    sae = _perturbed_sae(recipe)
    loaded = load_saelens(save_saelens(sae, tmp_path / recipe, instance=1))
    x = torch.randn(64, 2, 8, generator=torch.Generator(DEVICE).manual_seed(5))
    acts = sae.encode(x)[:, 1]
    assert (acts > 0).any() and (acts == 0).any()  # a sparse code, so the comparison means something
    assert torch.allclose(loaded.encode(x[:, 1]), acts, atol=1e-5)
    assert torch.allclose(loaded.decode(acts), sae.decode(sae.encode(x))[:, 1], atol=1e-5)


def test_recipes_without_a_saelens_counterpart_are_refused(tmp_path):
    assert len(EXPORTABLE) == 7  # every built-in exports, matryoshka as BatchTopK's inference
    sae = _perturbed_sae("topk")
    sae.recipe = type("Other", (Recipe,), {"name": "other"})()  # saelens_export None
    with pytest.raises(ValueError, match="no SAELens counterpart"):
        save_saelens(sae, tmp_path / "x")


def _write(path, config, tensors):
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(config))
    save_file(tensors, str(path / "sae_weights.safetensors"))
    return path


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu", "gated"])
def test_load_saelens_encodes_each_architecture_by_its_formula(tmp_path, architecture):
    generator = torch.Generator(DEVICE).manual_seed(3)
    d_in, d_sae = 6, 9
    tensors = {"W_enc": torch.randn(d_in, d_sae, generator=generator),
               "W_dec": torch.randn(d_sae, d_in, generator=generator),
               "b_dec": torch.randn(d_in, generator=generator), "b_enc": torch.randn(d_sae, generator=generator)}
    config = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
              "apply_b_dec_to_input": True, "normalize_activations": "none"}
    if architecture == "topk":
        config.update(k=3, rescale_acts_by_decoder_norm=True)
    if architecture == "jumprelu":
        tensors["threshold"] = torch.rand(d_sae, generator=generator)
    if architecture == "gated":
        del tensors["b_enc"]
        tensors.update(b_gate=torch.randn(d_sae, generator=generator), b_mag=torch.randn(d_sae, generator=generator),
                       r_mag=0.1 * torch.randn(d_sae, generator=generator))
    sae = load_saelens(_write(tmp_path / architecture, config, tensors))
    x = torch.randn(20, d_in, generator=generator).double().numpy()
    t = {name: value.double().numpy() for name, value in tensors.items()}
    xc = x - t["b_dec"]
    if architecture == "gated":
        expected = (xc @ t["W_enc"] + t["b_gate"] > 0) * np.maximum(xc @ (t["W_enc"] * np.exp(t["r_mag"])) + t["b_mag"], 0)
    else:
        pre = xc @ t["W_enc"] + t["b_enc"]
        if architecture == "standard":
            expected = np.maximum(pre, 0)
        elif architecture == "jumprelu":
            expected = np.where(pre > t["threshold"], np.maximum(pre, 0), 0)
        else:
            pre = pre * np.linalg.norm(t["W_dec"], axis=1)
            kth = np.sort(pre, axis=1)[:, -3][:, None]
            expected = np.where(pre >= kth, np.maximum(pre, 0), 0)
    acts = sae.encode(torch.from_numpy(x).float())
    assert np.allclose(acts.numpy(), expected, atol=1e-4)
    scale = np.linalg.norm(t["W_dec"], axis=1) if architecture == "topk" else 1.0
    assert np.allclose(sae.decode(acts).numpy(), (acts.numpy() / scale) @ t["W_dec"] + t["b_dec"], atol=1e-4)


def test_load_saelens_refuses_what_it_cannot_read(tmp_path):
    tensors = {"W_enc": torch.zeros(4, 5), "W_dec": torch.zeros(5, 4), "b_dec": torch.zeros(4),
               "b_enc": torch.zeros(5)}
    base = {"architecture": "standard", "d_in": 4, "d_sae": 5, "normalize_activations": "none"}
    with pytest.raises(ValueError, match="cannot read"):
        load_saelens(tmp_path / "missing")
    with pytest.raises(ValueError, match="architecture 'temporal'"):
        load_saelens(_write(tmp_path / "a", {**base, "architecture": "temporal"}, tensors))
    with pytest.raises(ValueError, match="layer_norm"):
        load_saelens(_write(tmp_path / "b", {**base, "normalize_activations": "layer_norm"}, tensors))
    with pytest.raises(ValueError, match="W_dec has shape"):
        load_saelens(_write(tmp_path / "c", {**base, "d_in": 3}, {**tensors, "W_enc": torch.zeros(3, 5),
                                                                   "b_dec": torch.zeros(3)}))
    with pytest.raises(ValueError, match="no 'b_enc'"):
        load_saelens(_write(tmp_path / "d", base, {k: v for k, v in tensors.items() if k != "b_enc"}))
    # a pre-6 config: no architecture, activation_fn_str / activation_fn_kwargs name a topk SAE
    old = load_saelens(_write(tmp_path / "e", {"d_in": 4, "d_sae": 5, "activation_fn_str": "topk",
                                               "activation_fn_kwargs": {"k": 2}, "normalize_activations": False},
                              tensors))
    assert (old.architecture, old.k, old.apply_b_dec_to_input) == ("topk", 2, True)

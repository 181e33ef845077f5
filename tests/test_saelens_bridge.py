"""SAELens for real (the `[saelens]` extra): its own trainer on toysuper data, graded by `evaluate`;
its on-disk format read by our loader and ours read by SAELens. Nothing is mocked."""

import pandas as pd
import pytest
import torch
from sae_lens import (SAE as SAELensSAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, GatedSAE, GatedSAEConfig,
                      JumpReLUSAE, JumpReLUSAEConfig, SAETrainer, StandardSAE, StandardSAEConfig, TopKSAE,
                      TopKSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig)
from sae_lens.config import LoggingConfig, SAETrainerConfig

import toysuper as ts
from device import DEVICE

from test_external import EXPORTABLE, _perturbed_sae  # noqa: E402  (tests/ is on the path under pytest)

STEPS, BATCH = 300, 1024


def _source():
    # two instances, so the bridge's instance selection is exercised: SAELens trains on instance 1
    dist = ts.FeatureDistribution(48, 0.04, n_instances=2, device=DEVICE)
    return ts.DictionarySource(ts.random_directions(48, 24, n_instances=2, seed=5, device=DEVICE), dist)


def test_an_sae_trained_by_saelens_on_toysuper_data_is_graded(tmp_path, capsys):
    # 24 × 96 matrices: one thread is as fast, and stays fast when other work shares the cores
    # (two spinning threads per process slowed this from seconds to minutes on a busy machine).
    torch.set_num_threads(1)
    source = _source()
    data = ts.SAELensActivations(source, batch_size=BATCH, instance=1, seed=0)
    assert next(data).shape == (BATCH, 24)
    torch.manual_seed(0)  # SAELens initialises its weights from torch's global generator
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=24, d_sae=96, k=3, device=DEVICE))
    one = ts.OneInstance(source, 1)
    before = ts.evaluate(sae, one, n_samples=4000)
    config = SAETrainerConfig(total_training_samples=STEPS * BATCH, train_batch_size_samples=BATCH, lr=3e-3,
                              lr_end=3e-3, device=DEVICE, logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(cfg=config, sae=sae, data_provider=data).fit()
    after = ts.evaluate(sae, one, n_samples=4000)
    with capsys.disabled():
        print(f"\nSAELens TopK (d_sae=96, k=3, {STEPS} steps) on 48 toysuper features in 24 dims:\n{after}")
    summary = after.summary.iloc[0]
    assert summary["mmcs"] > before.summary["mmcs"][0] + 0.3  # training found the features ...
    assert summary["recovered@0.9"] >= 0.9 and summary["fvu"] < 0.2  # ... and reconstructs with them
    # SAELens's own save format grades the same as the live object
    sae.save_inference_model(tmp_path / "inference")
    saved = ts.evaluate(tmp_path / "inference", one, n_samples=4000)
    pd.testing.assert_frame_equal(saved.features, after.features, atol=1e-5)
    assert saved.summary["recovered@0.9"][0] == summary["recovered@0.9"]


def _randomised(sae):
    generator = torch.Generator(DEVICE).manual_seed(0)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=generator))
        if hasattr(sae, "threshold"):
            sae.threshold.abs_()
    return sae


@pytest.mark.parametrize("make", [
    lambda: StandardSAE(StandardSAEConfig(d_in=8, d_sae=20)),
    lambda: TopKSAE(TopKSAEConfig(d_in=8, d_sae=20, k=3, rescale_acts_by_decoder_norm=True)),
    lambda: JumpReLUSAE(JumpReLUSAEConfig(d_in=8, d_sae=20, apply_b_dec_to_input=False)),
    lambda: GatedSAE(GatedSAEConfig(d_in=8, d_sae=20)),
], ids=["standard", "topk", "jumprelu", "gated"])
def test_our_loader_reads_saelens_saves_exactly(tmp_path, make):
    theirs = _randomised(make())
    theirs.save_model(tmp_path / "sae")
    ours = ts.load_saelens(tmp_path / "sae")
    x = torch.randn(50, 8, generator=torch.Generator(DEVICE).manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
        assert torch.allclose(ours.decode(ours.encode(x)), theirs(x), atol=1e-5)


def test_a_batchtopk_sae_saved_for_inference_loads_as_jumprelu(tmp_path):
    theirs = _randomised(BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=8, d_sae=20, k=3)))
    theirs.save_inference_model(tmp_path / "sae")
    ours = ts.load_saelens(tmp_path / "sae")
    reference = SAELensSAE.load_from_disk(tmp_path / "sae")
    x = torch.randn(50, 8, generator=torch.Generator(DEVICE).manual_seed(2))
    with torch.no_grad():
        assert ours.architecture == "jumprelu"
        assert torch.allclose(ours.encode(x), reference.encode(x), atol=1e-5)


@pytest.mark.parametrize("recipe", EXPORTABLE)
def test_saelens_loads_what_toysuper_saves(tmp_path, recipe):
    sae = _perturbed_sae(recipe)
    ts.save_saelens(sae, tmp_path / "sae", instance=1)
    theirs = SAELensSAE.load_from_disk(tmp_path / "sae")
    x = torch.randn(64, 2, 8, generator=torch.Generator(DEVICE).manual_seed(3))
    with torch.no_grad():
        ours = sae.encode(x)[:, 1]
        assert (ours > 0).any()
        assert torch.allclose(theirs.encode(x[:, 1]), ours, atol=1e-5)
        assert torch.allclose(theirs(x[:, 1]), sae(x)[:, 1], atol=1e-5)

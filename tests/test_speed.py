"""The step's options: bf16 autocast, and capture in a CUDA graph with its fallback to eager."""

import pytest
import torch

from toysuper import SAE, RECIPES, DictionarySource, FeatureDistribution, random_directions, train_sae
from device import DEVICE


def small_task(recipe, **hyperparameters):
    directions = random_directions(32, 16, seed=0, device=DEVICE)[0]
    source = DictionarySource(directions, FeatureDistribution(32, 0.1, device=DEVICE))
    return SAE(16, 32, recipe=recipe, seed=0, device=DEVICE, **hyperparameters), source


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_bfloat16_autocast_trains_every_recipe_with_float32_weights(recipe):
    sae, source = small_task(recipe)
    start = sae.W_dec.detach().clone()
    result = train_sae(sae, source, steps=20, batch_size=64, quiet=True, log_every=5, precision="bfloat16")
    assert all(p.dtype == torch.float32 for p in sae.parameters())
    assert torch.isfinite(torch.tensor(result.history["loss"].to_numpy())).all()
    assert not torch.equal(sae.W_dec.detach(), start)
    # and bf16 follows float32 closely over a few steps
    reference, _ = small_task(recipe)
    train_sae(reference, source, steps=20, batch_size=64, quiet=True)
    assert torch.allclose(sae.W_dec.detach(), reference.W_dec.detach(), atol=0.05)


def test_precision_capture_and_tf32_are_checked():
    sae, source = small_task("topk")
    with pytest.raises(ValueError, match="precision"):
        train_sae(sae, source, steps=1, quiet=True, precision="float16x")
    with pytest.raises(ValueError, match="capture must be one of .*'graph'"):
        train_sae(sae, source, steps=1, quiet=True, capture="graph")
    with pytest.raises(TypeError, match="tf32 must be True or False, got 'yes'"):
        train_sae(sae, source, steps=1, quiet=True, tf32="yes")


# Captured and eager CUDA runs differ by the order of float atomics (index_add, scatter) alone.
CUDA_ATOL = 1e-4


def test_the_captured_run_is_the_eager_one():
    """On CUDA "auto" captures the step; on the CPU it runs eagerly. Either way it trains as "off" does."""
    sae, source = small_task("batchtopk")
    result = train_sae(sae, source, steps=8, batch_size=64, quiet=True, capture="auto")
    assert result.captured == (DEVICE == "cuda") and result.capture_failure is None
    eager, _ = small_task("batchtopk")
    assert not train_sae(eager, source, steps=8, batch_size=64, quiet=True, capture="off").captured
    if DEVICE == "cpu":
        assert torch.equal(sae.W_dec, eager.W_dec)
    else:
        assert torch.allclose(sae.W_dec, eager.W_dec, atol=CUDA_ATOL, rtol=0)

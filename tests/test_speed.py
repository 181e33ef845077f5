"""The step's options: bf16 autocast, and capture in a CUDA graph with its fallback to eager."""

import pytest
import torch

from toysuper import SAE, RECIPES, DictionarySource, FeatureDistribution, random_directions, train_sae
from toysuper import capture as capture_module
from toysuper.capture import StepRunner
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


def test_precision_and_capture_are_checked():
    sae, source = small_task("topk")
    with pytest.raises(ValueError, match="precision"):
        train_sae(sae, source, steps=1, quiet=True, precision="float16x")
    with pytest.raises(ValueError, match="capture must be one of .*'graph'"):
        train_sae(sae, source, steps=1, quiet=True, capture="graph")


def test_capture_is_off_on_the_cpu_and_the_run_is_the_eager_one():
    sae, source = small_task("batchtopk")
    result = train_sae(sae, source, steps=8, batch_size=64, quiet=True, capture="auto")
    assert not result.captured
    eager, _ = small_task("batchtopk")
    train_sae(eager, source, steps=8, batch_size=64, quiet=True, capture="off")
    assert torch.equal(sae.W_dec, eager.W_dec)


def test_a_failed_capture_warns_with_its_reason_and_training_goes_on_eagerly(monkeypatch):
    """Where capturing fails (an op that syncs, a driver without graphs), the step runs eagerly from then on."""
    monkeypatch.setattr(capture_module, "captures", lambda capture, device: True)
    monkeypatch.setattr(StepRunner, "_on_side_stream", lambda self: self.step())  # warm-up steps, no CUDA here

    def no_graphs(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(StepRunner, "_capture", no_graphs)
    calls = []
    resets = []
    runner = StepRunner(lambda: calls.append(1) or {"n": torch.tensor(len(calls))}, torch.device(DEVICE),
                        before_capture=lambda: resets.append(1))
    with pytest.warns(RuntimeWarning, match="operation not permitted when stream is capturing"):
        outputs = [int(runner()["n"]) for _ in range(capture_module.WARMUP_STEPS + 3)]
    assert outputs == list(range(1, capture_module.WARMUP_STEPS + 4))  # every call ran one step
    assert not runner.captured and "RuntimeError" in runner.failure and resets == [1]

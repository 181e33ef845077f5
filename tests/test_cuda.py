"""Real CUDA-graph captures: `pytest --device cuda tests/test_cuda.py` (conftest.py then turns a
CaptureWarning, a capture that failed and fell back to eager, into an error). Skipped on the CPU,
where nothing is captured; tests/test_capture.py checks the runner's logic there."""

import warnings

import pytest
import torch

from toysuper import (RECIPES, SAE, DictionarySource, FeatureDistribution, ToyModel, ToyModelSource,
                      instance_generators, random_directions, train_sae, train_toy_model)
from toysuper.capture import WARMUP_STEPS, CaptureWarning, StepRunner
from toysuper.toy.model import KINDS
from device import DEVICE

pytestmark = pytest.mark.skipif(DEVICE == "cpu", reason="CUDA graphs: run with pytest --device cuda")

# Captured and eager runs launch the same kernels; they differ by the order of float atomics (index_add,
# scatter) alone, which over 200 steps moves a weight by far less than this (the weights move ~1e-1).
ATOL_200_STEPS = 2e-3
SOURCE_KINDS = ("dictionary", "toy_model")  # the capturable ones; SAELensWorld is not (test_capture.py)


def source_of(kind: str, d_hidden: int = 16, n_instances: int = 2):
    dist = FeatureDistribution(32, 0.1, n_instances=n_instances, device=DEVICE)
    if kind == "dictionary":
        return DictionarySource(random_directions(32, d_hidden, seed=0, device=DEVICE)[0], dist)
    model = ToyModel(32, d_hidden, n_instances=n_instances, seed=0, device=DEVICE)
    train_toy_model(model, dist, steps=50, batch_size=256, quiet=True)
    return ToyModelSource(model, dist)


def trained(recipe: str, source, steps: int, capture: str = "auto", **options):
    sae = SAE(source.d_hidden, 32, n_instances=source.n_instances, recipe=recipe, seed=0, device=DEVICE)
    result = train_sae(sae, source, steps=steps, batch_size=256, quiet=True, capture=capture, **options)
    return sae, result


@pytest.mark.parametrize("source_kind", SOURCE_KINDS)
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_is_captured_on_every_capturable_source(recipe, source_kind):
    sae, result = trained(recipe, source_of(source_kind), steps=40)  # past every phase's warm-up
    assert result.captured and result.capture_failure is None
    assert all(p.grad is None for p in sae.parameters())  # the graphs' memory is released


@pytest.mark.parametrize("kind", KINDS)
def test_every_toy_model_kind_is_captured_and_agrees_with_eager_over_200_steps(kind):
    runs = {}
    for capture in ("auto", "off"):
        model = ToyModel(32, 8, n_instances=4, kind=kind, seed=0, device=DEVICE)
        start = model.W.detach().clone()
        result = train_toy_model(model, FeatureDistribution(32, 0.1, n_instances=4, device=DEVICE), steps=200,
                                 batch_size=256, quiet=True, capture=capture)
        assert result.captured == (capture == "auto")
        runs[capture] = model.W.detach()
    assert (runs["off"] - start).abs().max() > 10 * ATOL_200_STEPS
    assert torch.allclose(runs["auto"], runs["off"], atol=ATOL_200_STEPS, rtol=0)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_captured_and_eager_sae_runs_agree_over_200_steps(recipe):
    source = source_of("dictionary")
    (captured, result), (eager, _) = (trained(recipe, source, 200, capture) for capture in ("auto", "off"))
    start = SAE(16, 32, n_instances=2, recipe=recipe, seed=0, device=DEVICE).W_dec.detach()
    assert result.captured
    assert (eager.W_dec.detach() - start).abs().max() > 10 * ATOL_200_STEPS
    assert torch.allclose(captured.W_dec.detach(), eager.W_dec.detach(), atol=ATOL_200_STEPS, rtol=0)


def test_replays_draw_fresh_data_from_the_streams_eager_steps_read():
    source = source_of("dictionary")
    generators = instance_generators(0, DEVICE, source.n_instances)
    runner = StepRunner(lambda: {"x": source.sample_hidden(64, generators)}, torch.device(DEVICE),
                        streams=[generators.counter])
    batches = [runner()["x"].clone() for _ in range(WARMUP_STEPS + 4)]
    assert runner.captured
    assert all(not torch.equal(a, b) for a, b in zip(batches, batches[1:]))
    twins = instance_generators(0, DEVICE, source.n_instances)
    for batch in batches:  # each replay draws what the next eager draw would
        assert torch.allclose(batch, source.sample_hidden(64, twins), atol=1e-6, rtol=0)


def test_a_capture_made_to_fail_trains_eagerly_with_its_cause(monkeypatch):
    source = source_of("dictionary")
    recipe = RECIPES["topk"]
    loss = recipe.loss

    def syncing_loss(sae, x, state):
        float(x.sum().item())  # a host read: not allowed in a capture
        return loss(sae, x, state)

    monkeypatch.setattr(recipe, "loss", syncing_loss)
    with pytest.warns(CaptureWarning) as caught:
        fell_back, result = trained("topk", source, steps=30)
    assert len(caught) == 1 and not result.captured
    assert "captur" in result.capture_failure and "previous error" not in result.capture_failure
    eager, _ = trained("topk", source, steps=30, capture="off")
    # the failed capture left the data streams as they were: the run is the eager one
    assert torch.allclose(fell_back.W_dec, eager.W_dec, atol=ATOL_200_STEPS / 10, rtol=0)
    # and it left no capture open in torch: the allocator empties its cache, and the next run captures
    monkeypatch.undo()
    torch.cuda.empty_cache()
    assert trained("topk", source, steps=10)[1].captured


def test_no_deprecated_torch_call_and_tf32_is_put_back():
    before = torch.backends.cuda.matmul.fp32_precision
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sae, result = trained("batchtopk", source_of("dictionary"), steps=40, tf32=True)
    assert result.captured and torch.backends.cuda.matmul.fp32_precision == before
    assert not [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    reference, _ = trained("batchtopk", source_of("dictionary"), steps=40)
    assert torch.allclose(sae.W_dec, reference.W_dec, atol=2e-2, rtol=0)  # TF32: ~1e-3 relative per product

"""The training step's speed options: bf16 autocast, torch.compile and its fallback."""

import pytest
import torch

from toysuper import SAE, RECIPES, DictionarySource, FeatureDistribution, random_directions, train_sae
from toysuper.sae import speed


def small_task(recipe, **hyperparameters):
    directions = random_directions(32, 16, seed=0, device="cpu")[0]
    source = DictionarySource(directions, FeatureDistribution(32, 0.1, device="cpu"))
    return SAE(16, 32, recipe=recipe, seed=0, device="cpu", **hyperparameters), source


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


def test_precision_is_checked():
    sae, source = small_task("topk")
    with pytest.raises(ValueError, match="precision"):
        train_sae(sae, source, steps=1, quiet=True, precision="float16x")


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(function, **kwargs):
        def fails(*args):
            raise RuntimeError("no C++ compiler here")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    sae, source = small_task("relu_l1")
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler here"):
        train_sae(sae, source, steps=5, batch_size=64, quiet=True, compile=True)
    eager, _ = small_task("relu_l1")
    train_sae(eager, source, steps=5, batch_size=64, quiet=True)
    assert torch.equal(sae.W_dec, eager.W_dec)  # the fallback is the eager run, step for step


def test_compiled_or_eager_uses_the_compiled_function_when_it_works(monkeypatch):
    calls = []

    def fake_compile(function, **kwargs):
        def compiled(*args):
            calls.append(args)
            return function(*args)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    square = speed.CompiledOrEager(lambda t: t * t)
    assert square(torch.tensor(3.0)).item() == 9.0 and square(torch.tensor(2.0)).item() == 4.0
    assert len(calls) == 2


def test_compiled_loss_trains_as_the_eager_one():
    """compile=True for real (torch.compile of JumpReLU's loss, whose custom autograd function the
    compiler traces): the run matches the eager one step for step, up to float rounding. Where the
    machine cannot compile, the fallback is the eager run and this holds all the more."""
    sae, source = small_task("jumprelu")
    train_sae(sae, source, steps=6, batch_size=64, quiet=True, compile=True)
    eager, _ = small_task("jumprelu")
    train_sae(eager, source, steps=6, batch_size=64, quiet=True)
    assert not torch.equal(eager.W_dec.detach(), small_task("jumprelu")[0].W_dec.detach())  # training moved it
    for name, parameter in eager.named_parameters():
        torch.testing.assert_close(getattr(sae, name), parameter, rtol=1e-4, atol=1e-5, msg=name)

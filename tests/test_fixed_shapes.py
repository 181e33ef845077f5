"""The proof, on a CPU, that a training step has fixed shapes and no host sync.

torch.compile(fullgraph=True, dynamic=False) refuses a graph break: a .item(), a nonzero, a
boolean-mask index, a data-dependent shape or a Python branch on a tensor's value would raise here.
For every recipe and toy-model kind the loss (forward + loss; AOTAutograd traces its backward with it,
custom autograd functions included) and the bookkeeping around the optimiser compile so, and the
compiled functions give what eager gives, values and gradients. (torch's dynamo cannot trace
loss.backward(), optimizer.step() or a draw from a torch.Generator, so those stay outside; on CUDA
torch.cuda.graph captures them with the rest, toysuper/capture.py.) The "aot_eager" backend runs the
traced graphs without generating code, which keeps these tests fast; the tracing is the proof.
"""

import pytest
import torch

from toysuper import RECIPES, SAE, ToyModel
from toysuper.sae import codes
from toysuper.sae.state import TrainState
from toysuper.sae.step import before_optimizer, bookkeeping, clip_per_instance, lr_multiplier
from toysuper.toy.model import KINDS, importance_weighted_mse
from device import DEVICE

SETTINGS = {"topk": {"k": [2, 3], "k_aux": [3, 4]},
            # BatchTopK: one instance still in its TopK warm-up, one selecting batch-wide
            "batchtopk": {"k": [2, 3], "k_aux": [3, 4], "topk_warmup": [0.9, 0.0]},
            "matryoshka": {"k": [2, 3], "k_aux": [3, 4], "smallest_prefix": [0.25, 0.5]},
            # the target-L0 controller on in one instance, acting from the start
            "anthropic_2024": {"target_l0": [0.0, 3.0], "l1_warmup": [0.0, 0.8]}, "relu_l1": {"target_l0": [2.0, 0.0]},
            "jumprelu": {"target_l0": [4.0, 2.0], "l0_warmup": [0.8, 0.0]}, "gated": {"target_l0": [0.0, 3.0]}}


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled(fn):
    return torch.compile(fn, fullgraph=True, dynamic=False, backend="aot_eager")


def training_state(sae: SAE) -> TrainState:
    """Half-way through a run, a few latents dead in each instance (AuxK has work), the phase unknown (BatchTopK
    then decides per instance on the device)."""
    since_fired = torch.zeros(sae.n_instances, sae.d_sae)
    since_fired[:, ::3] = 1000.0
    return TrainState(steps=40, batch_size=16, dead_window=500, step=torch.tensor(20.0),
                      samples_since_fired=since_fired)


def small_sae(recipe: str) -> SAE:
    sae = SAE(6, 12, n_instances=2, recipe=recipe, seed=1, device=DEVICE, **SETTINGS.get(recipe, {}))
    with torch.no_grad():  # biases off zero, so every term of the loss is exercised
        sae.b_enc.normal_(0, 0.1, generator=torch.Generator(DEVICE).manual_seed(0))
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator(DEVICE).manual_seed(1))
    return sae


IMPLEMENTATIONS = {  # the codes (sae/codes.py); the sparse one's AuxK and batch top-k paths that read counts back
    # are for eager CPU steps only
    "dense codes": codes.DENSE,
    "sparse codes": codes.SPARSE._replace(top_k_among=codes.dense_top_k_among, batch_top_k=codes.batch_top_k)}


@pytest.mark.parametrize("recipe, implementation", [(recipe, "dense codes") for recipe in sorted(RECIPES)]
                         + [(recipe, "sparse codes") for recipe in ("batchtopk", "matryoshka", "topk")])
def test_every_recipe_loss_compiles_whole_and_matches_eager(recipe, implementation, monkeypatch):
    monkeypatch.setitem(codes.BY_DEVICE, torch.device(DEVICE).type, IMPLEMENTATIONS[implementation])
    x = torch.randn(16, 2, 6, generator=torch.Generator(DEVICE).manual_seed(2))
    results = []
    for compile_it in (False, True):
        sae = small_sae(recipe)
        state = training_state(sae)
        loss = (compiled if compile_it else (lambda f: f))(lambda x: sae.recipe.loss(sae, x, state))
        out = loss(x)
        out.loss.sum().backward()
        results.append((out, {name: p.grad for name, p in sae.named_parameters()}))
    (eager_out, eager_grads), (out, grads) = results
    assert eager_out.terms.keys() == out.terms.keys()
    for name in ("loss", "fired", "l0"):
        torch.testing.assert_close(getattr(out, name), getattr(eager_out, name), msg=name)
    for name, value in eager_out.terms.items():
        torch.testing.assert_close(out.terms[name], value, msg=name)
    for name, grad in eager_grads.items():
        assert grad is not None, name
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_bookkeeping_around_the_optimiser_compiles_whole_and_matches_eager(recipe, monkeypatch):
    """The recipe's gradient fix, the per-instance clip, the schedule, and after the optimiser the
    recipe's constraints and statistics, the dead-latent counters and the step count."""
    x = torch.randn(16, 2, 6, generator=torch.Generator(DEVICE).manual_seed(3))

    monkeypatch.setitem(codes.BY_DEVICE, torch.device(DEVICE).type, codes.DENSE)

    def around_the_optimiser(sae, state, out):
        before_optimizer(sae, state)
        clip_per_instance(list(sae.parameters()), 0.5)
        with torch.no_grad():
            bookkeeping(sae, state, out)
        return lr_multiplier(state.step, state.steps, warmup=0.1, decay=0.2)

    outcomes = []
    for run in (around_the_optimiser, compiled(around_the_optimiser)):
        sae = small_sae(recipe)
        state = training_state(sae)
        out = sae.recipe.loss(sae, x, state)
        out.loss.sum().backward()
        lr = run(sae, state, out._replace(loss=out.loss.detach(), terms={k: v.detach() for k, v in out.terms.items()}))
        outcomes.append((lr, state, sae))
    (want_lr, want_state, want), (lr, state, got) = outcomes
    torch.testing.assert_close(lr, want_lr)
    assert state.step.item() == want_state.step.item() == 21
    torch.testing.assert_close(state.samples_since_fired, want_state.samples_since_fired)
    for (name, a), (_, b) in zip(got.state_dict().items(), want.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    for (name, a), (_, b) in zip(got.named_parameters(), want.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=f"{name}.grad")


@pytest.mark.parametrize("kind", KINDS)
def test_toy_model_loss_compiles_whole_and_matches_eager(kind):
    generator = torch.Generator(DEVICE).manual_seed(4)
    x = torch.rand(32, 3, 10, generator=generator) * (torch.rand(32, 3, 10, generator=generator) < 0.3)
    importance = 0.9 ** torch.arange(10.0).expand(3, -1)
    results = []
    for compile_it in (False, True):
        model = ToyModel(10, 4, 3, kind=kind, seed=0, device=DEVICE)
        loss = (compiled if compile_it else (lambda f: f))(lambda x: importance_weighted_mse(model, x, importance))
        value = loss(x)
        value.sum().backward()
        results.append((value, model.W.grad, model.b.grad))
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want)

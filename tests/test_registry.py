"""The public recipe registry: registration, lookup by name or import path, options, where config.json
says a recipe comes from, and each recipe's declared SAELens export."""

import json
import textwrap

import pytest
import torch

import toysuper as ts
from toysuper.sae.recipes import RECIPES, Recipe, get_recipe, recipe_path, register_recipe, registry
from toysuper.sae.recipes.relu_l1 import ReluL1
from toysuper.sweep import config as config_io
from toysuper.sweep.planner import plan
from device import DEVICE


@pytest.fixture(autouse=True)
def registry_restored():
    """Each test's registrations are undone, so that tests do not see each other's recipes."""
    before = dict(registry._RECIPES)
    yield
    registry._RECIPES.clear()
    registry._RECIPES.update(before)


def outside_module(tmp_path, monkeypatch, module: str) -> str:
    """A module `module` on the path holding `Switchy`, a relu_l1 with a string and a bool option."""
    (tmp_path / f"{module}.py").write_text(textwrap.dedent("""
        from toysuper.sae.recipes.relu_l1 import ReluL1

        class Switchy(ReluL1):
            name = "switchy"
            options = {"flavour": ("plain", "spicy"), "loud": False}
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{module}:Switchy"


def test_register_as_a_function_and_as_a_decorator():
    class Plain(ReluL1):
        name = "plain_l1"

    assert register_recipe(Plain) is Plain
    assert isinstance(RECIPES["plain_l1"], Plain) and get_recipe("plain_l1") is RECIPES["plain_l1"]

    @ts.register_recipe
    class Decorated(ReluL1):
        name = "decorated_l1"

    assert isinstance(ts.RECIPES["decorated_l1"], Decorated)
    sae = ts.SAE(4, 6, recipe="decorated_l1", device=DEVICE)  # by name, as a built-in
    assert sae.recipe is RECIPES["decorated_l1"] and sae.config()["recipe"] == f"{__name__}:{Decorated.__qualname__}"


def test_a_taken_name_is_refused_and_the_view_is_read_only():
    class Impostor(ReluL1):
        name = "topk"

    with pytest.raises(ValueError, match="'topk' is registered already"):
        register_recipe(Impostor)
    with pytest.raises(ValueError, match="'topk' is registered already"):
        ts.SAE(4, 6, recipe=Impostor, device=DEVICE)
    with pytest.raises(TypeError):
        ts.RECIPES["mine"] = RECIPES["topk"]
    with pytest.raises(TypeError, match="subclass of toysuper.sae.recipes.Recipe"):
        register_recipe(RECIPES["topk"])  # an instance, not a class


def test_declarations_are_checked_at_registration():
    class BadKnob(ReluL1):
        name = "bad_knob"
        sparsity_knob = "lambda"

    class Clash(ReluL1):
        name = "clash"
        options = {"seed": True}

    with pytest.raises(ValueError, match="sparsity_knob 'lambda'"):
        register_recipe(BadKnob)
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        register_recipe(Clash)
    assert "bad_knob" not in RECIPES and "clash" not in RECIPES


def test_built_ins_declare_their_knob_and_export():
    assert {name: recipe.sparsity_knob for name, recipe in RECIPES.items()} == {
        "anthropic_2024": "l1_coefficient", "relu_l1": "l1_coefficient", "topk": "k", "batchtopk": "k",
        "jumprelu": "l0_coefficient", "gated": "l1_coefficient", "matryoshka": "k"}
    assert RECIPES["matryoshka"].saelens_export == RECIPES["batchtopk"].saelens_export == "batchtopk"
    assert all(recipe_path(recipe) == name for name, recipe in RECIPES.items())  # built-ins: recorded by name


def test_lookup_by_import_path_imports_and_registers(tmp_path, monkeypatch):
    spec = outside_module(tmp_path, monkeypatch, "outside_lookup")
    assert "switchy" not in RECIPES
    recipe = get_recipe(spec)
    assert type(recipe).__name__ == "Switchy" and RECIPES["switchy"] is recipe
    assert get_recipe(spec) is recipe and get_recipe("switchy") is recipe  # once registered, by either
    sae = ts.SAE(4, 6, recipe=spec, device=DEVICE)
    assert sae.recipe is recipe and sae.config()["recipe"] == spec


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_here:Thing", "'no_such_module_here:Thing' cannot be imported .*No module named"),
    ("toysuper.sae.recipes.topk:Missing", "'toysuper.sae.recipes.topk:Missing' cannot be imported"),
    ("os:path", "'os:path' names .* not a subclass"),
    ("nope", r"one of \['anthropic_2024', .*\] or an import path 'module:Class', got 'nope'"),
])
def test_a_recipe_that_cannot_be_found_is_named(spec, message):
    with pytest.raises(ValueError, match=message):
        get_recipe(spec)
    with pytest.raises(ValueError, match="sae.recipe"):
        config_io.resolve({"sae": {"recipe": spec}})


def test_options_are_validated_by_name(tmp_path, monkeypatch):
    spec = outside_module(tmp_path, monkeypatch, "outside_options")
    sae = ts.SAE(4, 6, recipe=spec, device=DEVICE)
    assert sae.options == {"flavour": "plain", "loud": False}  # the defaults: a tuple's first entry, the bool
    assert ts.SAE(4, 6, recipe=spec, flavour="spicy", loud=True, device=DEVICE).options == {"flavour": "spicy",
                                                                                           "loud": True}
    with pytest.raises(ValueError, match=r"flavour must be one of \['plain', 'spicy'\].*got 'mild'"):
        ts.SAE(4, 6, recipe=spec, flavour="mild", device=DEVICE)
    with pytest.raises(ValueError, match="loud must be a bool.*got 1"):
        ts.SAE(4, 6, recipe=spec, loud=1, device=DEVICE)
    with pytest.raises(ValueError, match="sparsity_penalty must be one of"):
        ts.SAE(4, 6, recipe="jumprelu", sparsity_penalty=0.0, device=DEVICE)
    with pytest.raises(ValueError, match="tanh_scale must be > 0"):  # no longer a switch: the option is
        ts.SAE(4, 6, recipe="jumprelu", tanh_scale=0.0, device=DEVICE)


def test_jumprelu_penalty_option_selects_the_l0_penalty():
    x = torch.rand(32, 1, 4, generator=torch.Generator(DEVICE).manual_seed(0), device=DEVICE)
    l0 = ts.SAE(4, 6, recipe="jumprelu", sparsity_penalty="l0", pre_act_coefficient=0.0, device=DEVICE)
    tanh = ts.SAE(4, 6, recipe="jumprelu", pre_act_coefficient=0.0, device=DEVICE)
    with torch.no_grad():
        l0.log_threshold.fill_(-3.0)
        tanh.load_state_dict(l0.state_dict())
    fires = (l0.pre_activations(x) > l0.log_threshold.exp()).float().sum(-1).mean(0).item()
    assert fires > 0
    assert l0.recipe.loss(l0, x).terms["sparsity"].item() == pytest.approx(fires)  # λ's term counts the firing latents
    assert tanh.recipe.loss(tanh, x).terms["sparsity"].item() < fires  # tanh saturates below 1 per latent


def test_options_and_an_outside_recipe_round_trip_through_save_and_load(tmp_path, monkeypatch):
    spec = outside_module(tmp_path, monkeypatch, "outside_saved")
    sae = ts.SAE(4, 6, n_instances=2, recipe=spec, flavour="spicy", loud=True, l1_coefficient=[0.1, 0.2], seed=3,
                 device=DEVICE)
    saved = sae.save(tmp_path / "sae")
    config = json.loads((saved / "config.json").read_text())
    assert config["recipe"] == spec and config["flavour"] == "spicy" and config["loud"] is True
    loaded = ts.SAE.load(saved, device=DEVICE)
    assert loaded.recipe is sae.recipe and loaded.options == sae.options
    x = torch.randn(8, 2, 4, generator=torch.Generator(DEVICE).manual_seed(1), device=DEVICE)
    assert torch.equal(loaded(x), sae(x))
    jumprelu = ts.SAE(4, 6, recipe="jumprelu", sparsity_penalty="l0", device=DEVICE)
    assert ts.SAE.load(jumprelu.save(tmp_path / "jumprelu"), device=DEVICE).options == {"sparsity_penalty": "l0"}

    config["recipe"] = "gone_module:Gone"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained with recipe 'gone_module:Gone', which cannot be found"):
        ts.SAE.load(saved, device=DEVICE)


def test_saelens_export_is_declared_per_recipe(tmp_path, monkeypatch):
    spec = outside_module(tmp_path, monkeypatch, "outside_export")  # inherits relu_l1's "standard" export
    sae = ts.SAE(4, 6, recipe=spec, seed=2, device=DEVICE)
    with torch.no_grad():
        sae.b_enc.normal_(generator=torch.Generator(DEVICE).manual_seed(3))
    loaded = ts.load_saelens(ts.save_saelens(sae, tmp_path / "exported"))
    x = torch.randn(16, 1, 4, generator=torch.Generator(DEVICE).manual_seed(4), device=DEVICE)
    assert torch.allclose(loaded.encode(x[:, 0]), sae.encode(x)[:, 0], atol=1e-6)

    class Unexportable(ReluL1):
        name = "unexportable"
        saelens_export = None

    with pytest.raises(ValueError, match="recipe 'unexportable' has no SAELens counterpart"):
        ts.save_saelens(ts.SAE(4, 6, recipe=Unexportable, device=DEVICE), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_sweep_names_an_outside_recipe_by_import_path(tmp_path, monkeypatch):
    spec = outside_module(tmp_path, monkeypatch, "outside_sweep")
    points = config_io.expand(config_io.resolve({"sae": {"recipe": [spec, "topk"], "l1_coefficient": [0.1, 0.2]}}))
    outside = [p for p in points if p["sae.recipe"] == spec]
    assert [p["sae.l1_coefficient"] for p in outside] == [0.1, 0.2] and len(points) == 3
    with pytest.raises(ValueError, match="unknown config key 'sae.l2_coefficient'"):
        config_io.resolve({"sae": {"recipe": spec, "l2_coefficient": 0.1}})


def test_recipe_base_class_is_public():
    assert ts.Recipe is Recipe and ts.get_recipe("topk") is RECIPES["topk"]


def test_a_sweep_sets_options_per_sae_and_batches_them_apart():
    config = config_io.resolve({"sae": {"recipe": "jumprelu", "sparsity_penalty": ["tanh", "l0"],
                                        "l0_coefficient": [0.1, 0.2]}, "run": {"max_instances": 8}})
    points = config_io.expand(config)
    assert sorted((p["sae.sparsity_penalty"], p["sae.l0_coefficient"]) for p in points) == [
        ("l0", 0.1), ("l0", 0.2), ("tanh", 0.1), ("tanh", 0.2)]
    batches = plan(config)
    assert sorted(len(batch.points) for batch in batches) == [2, 2]  # one SAE per option, its instances batched
    for batch in batches:
        assert len({p["sae.sparsity_penalty"] for p in batch.points}) == 1
    with pytest.raises(ValueError, match="sparsity_penalty must be one of"):
        plan(config_io.resolve({"sae": {"recipe": "jumprelu", "sparsity_penalty": "step"}}))

"""Every bad input of issue 17 gets an error naming the parameter and the value, before anything is written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import toysuper as ts
from toysuper.sweep import cli, config as config_io
from toysuper.sweep.planner import plan
from device import DEVICE

ROOT = Path(__file__).resolve().parent.parent


def _source(n_features=3):
    return ts.DictionarySource(torch.eye(n_features), ts.FeatureDistribution(n_features, 0.5, device=DEVICE))


def test_whole_number_floats_are_taken_as_the_sizes_they_name():
    assert ts.ToyModel(n_features=5.0, d_hidden=2.0, n_instances=2.0, device=DEVICE).W.shape == (2, 5, 2)
    sae = ts.SAE(3.0, 8.0, device=DEVICE)
    assert sae.W_dec.shape == (1, 8, 3) and (sae.d_hidden, sae.d_sae) == (3, 8)
    config = config_io.resolve({"features": {"n_features": 6.0}, "source": {"d_hidden": [3.0, 4]},
                                "sae": {"d_sae": 8.0}, "evaluate": {"n_samples": 100.0}})
    assert config["features"]["n_features"] == 6 and type(config["features"]["n_features"]) is int
    assert config["source"]["d_hidden"] == [3, 4] and all(type(v) is int for v in config["source"]["d_hidden"])
    batches = plan(config)  # d_hidden = 3.0 no longer fails inside the SAE (an error that blamed d_sae)
    assert sorted(b.points[0]["source.d_hidden"] for b in batches) == [3, 4]
    assert config_io.config_key(config) == config_io.config_key(config_io.resolve(
        {"features": {"n_features": 6}, "source": {"d_hidden": [3, 4]}, "sae": {"d_sae": 8},
         "evaluate": {"n_samples": 100}}))
    with pytest.raises(TypeError, match="features.n_features"):
        plan(config_io.resolve({"features": {"n_features": 6.5}}))


BAD_CALLS = {
    "seed -1 (SAE)": (lambda: ts.SAE(4, 8, seed=-1, device=DEVICE), "seed", "-1"),
    "seed -1 (toy model)": (lambda: ts.ToyModel(4, 2, seed=-1, device=DEVICE), "seed", "-1"),
    "seed 'x' (train_sae)": (lambda: ts.train_sae(ts.SAE(3, 6, device=DEVICE), _source(), steps=2, seed="x"),
                             "seed", "'x'"),
    "seed 'x' (evaluate)": (lambda: ts.evaluate(ts.SAE(3, 6, device=DEVICE), _source(), n_samples=64, seed="x"),
                            "seed", "'x'"),
    "seed True (toy model)": (lambda: ts.ToyModel(4, 2, seed=True, device=DEVICE), "seed", "True"),
    "lr 0 (train_sae)": (lambda: ts.train_sae(ts.SAE(3, 6, device=DEVICE), _source(), steps=2, lr=0), "lr", "0"),
    "lr 0 (train_toy_model)": (lambda: ts.train_toy_model(ts.ToyModel(3, 2, device=DEVICE),
                                                          ts.FeatureDistribution(3, 0.5, device=DEVICE), steps=2, lr=0),
                               "lr", "0"),
    "k True": (lambda: ts.SAE(4, 8, recipe="topk", k=True, device=DEVICE), "k", "True"),
    "k_aux > d_sae": (lambda: ts.SAE(4, 8, recipe="topk", k=2, k_aux=100, device=DEVICE), "k_aux", "100"),
    "zero-norm direction": (lambda: ts.DictionarySource(torch.eye(3) * torch.tensor([1.0, 0.0, 1.0])[:, None],
                                                        ts.FeatureDistribution(3, 0.5, device=DEVICE)),
                            "directions", "feature 1"),
    "random_directions(0, d)": (lambda: ts.random_directions(0, 4, device=DEVICE), "n_features", "0"),
    "train_sae(sae, tensor)": (lambda: ts.train_sae(ts.SAE(3, 6, device=DEVICE), torch.randn(100, 3), steps=2),
                               "source", "Tensor of shape (100, 3)"),
    "sparsity_sweep(n, [])": (lambda: ts.FeatureDistribution.sparsity_sweep(4, [], device=DEVICE), "sparsities", "[]"),
    "cosine_matrix shapes": (lambda: ts.cosine_matrix(torch.randn(4, 3), torch.randn(5, 2)), "decoder_directions",
                             "(5, 2)"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_api_input_is_named(name):
    call, parameter, value = BAD_CALLS[name]
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert parameter in str(error.value) and value in str(error.value), str(error.value)


def test_a_diverging_learning_rate_is_said_out_loud():
    sae = ts.SAE(3, 6, device=DEVICE)
    with pytest.warns(RuntimeWarning, match="diverged.*lr=10000"):
        ts.train_sae(sae, _source(), steps=300, batch_size=256, lr=1e4, quiet=True)
    with torch.no_grad():
        sae.W_dec[0, 2, 1] = float("nan")
    with pytest.raises(ValueError, match="decoder directions contain NaN"):  # not scipy's "invalid numeric entries"
        ts.evaluate(sae, _source(), n_samples=64)


def _saved_sae(tmp_path, recipe="topk"):
    sae = ts.SAE(3, 6, recipe=recipe, k=2, device=DEVICE) if recipe == "topk" else ts.SAE(3, 6, device=DEVICE)
    return sae, sae.save(tmp_path / "sae")


def _edit_json(path, **changes):
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def _poison(path, name):
    tensors = load_file(str(path))
    tensors[name][0].view(-1)[0] = float("inf")
    save_file(tensors, str(path))


def test_a_saved_sae_that_does_not_add_up_is_refused(tmp_path):
    _, directory = _saved_sae(tmp_path)
    _edit_json(directory / "config.json", k=[4])  # an edited k used to be overwritten by the weights' k, silently
    with pytest.raises(ValueError, match=r"says k=\[4.0\].*holds k=\[2.0\]"):
        ts.SAE.load(directory)
    _edit_json(directory / "config.json", k=[2], recipe=None)  # used to blame anthropic_2024's hyperparameters
    with pytest.raises(ValueError, match="has no 'recipe'"):
        ts.SAE.load(directory)
    _, directory = _saved_sae(tmp_path / "nan", "anthropic_2024")
    _poison(directory / "weights.safetensors", "W_dec")
    with pytest.raises(ValueError, match="W_dec contains 1 NaN or infinite"):
        ts.SAE.load(directory)
    with pytest.raises(ValueError, match="W_dec contains 1 NaN or infinite"):
        ts.evaluate(directory, _source(), n_samples=64)


@pytest.mark.parametrize("change, match", [({"k": 0}, "k=0"), ({"k": 100}, "k=100"), ({"k": -3}, "k=-3"),
                                           ({"k": True}, "k=True"), ({"architecture": ["topk"]}, r"\['topk'\]"),
                                           ({"d_sae": 6.5}, "d_sae")])
def test_load_saelens_names_a_bad_config(tmp_path, change, match):
    sae, _ = _saved_sae(tmp_path)
    ts.save_saelens(sae, tmp_path / "lens")
    _edit_json(tmp_path / "lens" / "cfg.json", **change)
    with pytest.raises(ValueError, match=match):
        ts.load_saelens(tmp_path / "lens")


def test_load_saelens_refuses_infinite_weights(tmp_path):
    sae, _ = _saved_sae(tmp_path)
    ts.save_saelens(sae, tmp_path / "lens")
    _poison(tmp_path / "lens" / "sae_weights.safetensors", "W_enc")
    with pytest.raises(ValueError, match="W_enc in sae_weights.safetensors contains 1 NaN or infinite"):
        ts.load_saelens(tmp_path / "lens")


TINY = """
name = "bad"
[features]
n_features = 6
[source]
d_hidden = 3
steps = 10
[sae]
d_sae = 8
steps = 10
[evaluate]
n_samples = 100
"""

BAD_SETTINGS = [
    (['device="gpu"'], "'gpu'"),
    (["run.save_models=False"], "false"),  # a string used to count as true
    (['run.save_models="no"'], "run.save_models"),
    (["run.ray_address=3"], "run.ray_address"),
    (["run.threads=-1"], "run.threads"),
    (["run.max_instances=2.5"], "run.max_instances"),
    (["run.memory_mb=0"], "run.memory_mb"),
    (['name="../x"'], "'../x'"),
    (['name="/tmp/elsewhere"'], "'/tmp/elsewhere'"),
    (["sae.lr=0"], "sae.lr"),
    (["source.lr=0"], "source.lr"),
    (["seed=-1"], "seed"),
    (["sae.recipe=topk", "sae.k=true"], "k"),
    (["sae.recipe=topk", "sae.k_aux=20"], "k_aux"),
    (["sae.recipe=[topk, relu_l1]"], '["topk", "relu_l1"]'),  # unquoted strings in a list: how to write it
    (["feature.sparsity=0.5"], "did you mean 'features.sparsity'"),
    (["features.sparsty=0.5"], "did you mean 'features.sparsity'"),
    (["sae.l1_coeficient=0.5"], "did you mean 'sae.l1_coefficient'"),
    # issue 26: configurations mean what they say
    (['device="mps"'], "'mps'"),
    (["features.sparsity=1.0"], "features.sparsity"),  # no feature would ever fire
    (["source.kind=dictionary"], "source.steps"),  # TINY's toy-model steps do not apply to a dictionary
    (['name="my run"'], "'my run'"),
]


@pytest.mark.parametrize("overrides, named", BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_settings_are_named_before_anything_is_written(tmp_path, capsys, overrides, named, dry_run):
    path = tmp_path / "bad.toml"
    path.write_text(TINY)
    out = tmp_path / "run"
    argv = ["run", str(path), "--out", str(out), "--quiet", *(["--dry-run"] if dry_run else [])]
    for override in overrides:
        argv += ["--set", override]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("toysuper: error:") and named in error, error
    assert not out.exists() and not (tmp_path / "runs").exists()
    assert len(error.splitlines()) == 1  # one line, no traceback


def test_cli_names_what_the_file_system_refuses(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.toml"
    path.write_text(TINY)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert cli.main(["run", str(path), "--out", str(a_file), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path), "--dry-run"]) == 2
    assert f"config file {str(tmp_path)!r} is a directory" in capsys.readouterr().err

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    with monkeypatch.context() as patch:  # a read-only --out (root ignores chmod, so the file system is faked)
        patch.setattr(Path, "mkdir", refuse)
        assert cli.main(["run", str(path), "--out", str(tmp_path / "ro" / "run"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "cannot write the run folder" in error and "Permission denied" in error
    assert not (tmp_path / "ro").exists()


def test_list_under_a_closed_pipe_exits_quietly():
    command = f"{sys.executable} -m toysuper.sweep.cli list | head -1"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.startswith("recipes") and done.stderr == "", done.stderr


def test_topk_k_aux_is_a_fixed_64_capped_at_the_width():
    """What the docs say: k_aux defaults to 64 (Gao et al.'s d/2 on the 128-dimensional standard task), at most
    d_sae; a larger k_aux given by hand is an error."""
    assert ts.SAE(4, 128, recipe="topk", device=DEVICE).k_aux.tolist() == [64.0]
    assert ts.SAE(4, 12, recipe="topk", k=2, device=DEVICE).k_aux.tolist() == [12.0]
    assert ts.SAE(512, 1024, recipe="topk", device=DEVICE).k_aux.tolist() == [64.0]  # not d/2 = 256


TOO_LARGE = [("features.n_features=1000000000", "features.n_features=1000000000"),
             ("sae.batch_size=1000000000", "sae.batch_size=1000000000"),
             ("sae.d_sae=100000000", "sae.d_sae=100000000"), ("source.d_hidden=100000000", "source.d_hidden=100000000"),
             ("evaluate.n_samples=1e12", "evaluate.n_samples")]


@pytest.mark.parametrize("override, named", TOO_LARGE, ids=[o for o, _ in TOO_LARGE])
@pytest.mark.parametrize("dry_run", [True, False])
def test_sizes_are_refused_before_anything_is_allocated_or_written(tmp_path, capsys, monkeypatch, override, named,
                                                                   dry_run):
    """Issue 26 items 1 and 3: the planner's estimate (weights, optimiser state, a batch, grading) refuses a
    configuration larger than run.memory_mb (one configuration cannot be split) before any model is built."""
    from toysuper.sweep import runner

    def never(*args, **kwargs):
        raise AssertionError("a model was built")

    for cls in (ts.SAE, ts.ToyModel, ts.FeatureDistribution):
        monkeypatch.setattr(cls, "__init__", never)
    monkeypatch.setattr(runner, "run_batch", never)
    path = tmp_path / "big.toml"
    path.write_text(TINY)
    out = tmp_path / "run"
    argv = ["run", str(path), "--out", str(out), "--quiet", "--set", override, *(["--dry-run"] if dry_run else [])]
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert named in error and ("MB" in error or "at most" in error), error
    assert not out.exists()


def test_a_dry_run_builds_no_model_and_refuses_a_device_it_cannot_use(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a model was built")

    path = tmp_path / "ok.toml"
    path.write_text(TINY.replace("d_sae = 8", 'd_sae = 8\nrecipe = "topk"\nk = [2, 4]'))
    with monkeypatch.context() as patch:
        patch.setattr(ts.SAE, "__init__", never)
        assert cli.main(["run", str(path), "--dry-run", "--out", str(tmp_path / "run")]) == 0
        assert cli.main(["run", str(path), "--dry-run", "--set", "sae.k=9"]) == 2  # k > d_sae: still checked
    assert "k must be at most d_sae=8" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--device", "mps", "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "'mps'" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_out_must_be_a_run_folder_or_new(tmp_path, capsys, monkeypatch):
    """Issue 26 item 5: a folder of the user's own files is never written into; --out '' is refused."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my,own\n1,2\n")
    for dry_run in ([], ["--dry-run"]):
        assert cli.main(["run", str(path), "--out", str(mine), "--quiet", *dry_run]) == 2
        error = capsys.readouterr().err
        assert "not a run folder" in error and "results.csv" in error, error
        assert (mine / "results.csv").read_text() == "my,own\n1,2\n" and sorted(p.name for p in mine.iterdir()) == \
            ["results.csv"]
        monkeypatch.chdir(tmp_path)
        assert cli.main(["run", str(path), "--out", "", "--quiet", *dry_run]) == 2
        assert "--out must name a folder" in capsys.readouterr().err
        assert not (tmp_path / "runs").exists()


def test_messages_say_what_is_true(tmp_path, capsys):
    """Issue 26 item 7: report FILE, run.max_instances, a UTF-8 BOM."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert cli.main(["report", str(path)]) == 2
    assert "is a file, not a run folder" in capsys.readouterr().err
    assert cli.main(["run", str(path), "--dry-run", "--set", "run.max_instances=-1"]) == 2
    error = capsys.readouterr().err
    assert "run.max_instances" in error and "torch" not in error
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())  # what some Windows editors write first
    assert cli.main(["run", str(path), "--dry-run", "--out", str(tmp_path / "run")]) == 0
    assert "experiment 'bad'" in capsys.readouterr().out

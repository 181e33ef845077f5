import pandas as pd
import pytest

from toysuper import cli, config as config_io
from toysuper.experiments import plan

TINY = """
name = "tiny"
[features]
n_features = 6
sparsity = [0.8, 0.95]
[source]
d_hidden = [2, 3]
steps = 300
[sae]
d_sae = 12
l1_coefficient = [0.1, 0.3]
steps = 200
batch_size = 256
[evaluate]
n_samples = 2000
"""


def test_grid_expansion_and_batching(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    config = config_io.load(path)
    assert len(config_io.expand(config)) == 8
    groups = plan(config)
    # sparsity and λ vary inside a batched pass; d_hidden changes shapes, so two passes
    assert len(groups) == 2
    assert sorted(len(g.points) for g in groups) == [4, 4]
    assert {dict(g.key)["source.d_hidden"] for g in groups} == {2, 3}


def test_unknown_key_and_bad_values_are_rejected_with_their_name(tmp_path):
    with pytest.raises(ValueError, match="sae.l1_coef"):
        config_io.resolve({"sae": {"l1_coef": 1.0}})
    with pytest.raises(ValueError, match="feature.sparsity"):
        config_io.resolve({}, ["feature.sparsity=0.5"])
    with pytest.raises(ValueError, match="features.sparsity"):
        plan(config_io.resolve({"features": {"sparsity": [0.5, 1.5]}}))
    with pytest.raises(ValueError, match="sae.d_sae"):
        plan(config_io.resolve({"sae": {"d_sae": 0}}))
    with pytest.raises(ValueError, match="recipe"):
        plan(config_io.resolve({"sae": {"recipe": "nope"}}))


def test_overrides_are_toml_values():
    config = config_io.resolve({}, ["sae.l1_coefficient=[0.1, 0.3]", "source.toy_model=linear", "seed=3"])
    assert config["sae"]["l1_coefficient"] == [0.1, 0.3]
    assert config["source"]["toy_model"] == "linear"
    assert config["seed"] == 3


def test_resolved_config_round_trips_through_toml():
    config = config_io.resolve({"features": {"sparsity": [0.5, 0.9]}, "name": 'say "hi"'})
    assert config_io.resolve(config_io.tomllib.loads(config_io.to_toml(config))) == config


def test_cli_run_writes_results_config_and_figure(tmp_path, capsys):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--device", "cpu", "--quiet",
                     "--set", "source.kind=dictionary"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8
    assert set(results["source.kind"]) == {"dictionary"}
    assert results["recovered@0.9"].between(0, 1).all()
    assert (out / "recovery.png").stat().st_size > 1000
    assert config_io.load(out / "config.toml")["source"]["kind"] == "dictionary"
    printed = capsys.readouterr().out
    assert "recovered@0.9" in printed and printed.count("\n") >= 9


def test_cli_reports_bad_config_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[sae]\nwidth = 3\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "sae.width" in capsys.readouterr().err

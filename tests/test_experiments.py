import json

import numpy as np
import pandas as pd
import pytest

from toysuper.sweep import cli, config as config_io
from toysuper.sweep.experiments import dry_run, plan, run
from toysuper.sweep.planner import estimate_mb
from toysuper.sweep.store import RunStore
from device import DEVICE

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


def write(tmp_path, text=TINY, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expansion_and_batching(tmp_path):
    config = config_io.load(write(tmp_path), ["seed=[0, 1]"])
    assert len(config_io.expand(config)) == 16
    batches = plan(config)
    # sparsity, λ and seed vary inside a batched pass; d_hidden changes shapes, so two passes
    assert len(batches) == 2
    assert sorted(len(b.points) for b in batches) == [8, 8]
    assert {b.points[0]["source.d_hidden"] for b in batches} == {2, 3}
    # one toy model per distinct (sparsity, seed); λ only adds SAE instances
    assert [b.n_toy_models for b in batches] == [4, 4]
    keys = [k for b in batches for k in b.keys]
    assert len(set(keys)) == 16
    # the plan is a function of the config alone: same batches, same ids
    again = plan(config_io.load(write(tmp_path), ["seed=[0, 1]"]))
    assert [b.id for b in again] == [b.id for b in batches]


def test_packing_respects_max_instances_and_the_memory_budget(tmp_path):
    config = config_io.load(write(tmp_path), ["source.d_hidden=3", "run.max_instances=3"])
    batches = plan(config)
    assert sorted(len(b.points) for b in batches) == [1, 3]  # 4 points of one shape, at most 3 a batch
    # points sharing a toy model stay in one batch where they fit: two λ per sparsity
    first = max(batches, key=lambda b: len(b.points))
    assert first.n_toy_models == 2
    one = estimate_mb(first.points[0], 1, 1)
    budget = config_io.load(write(tmp_path), ["source.d_hidden=3", f"run.memory_mb={2.5 * one}"])
    batches = plan(budget)
    assert all(b.estimate_mb() <= 2.5 * one for b in batches)
    assert sum(len(b.points) for b in batches) == 4 and len(batches) >= 2
    # resuming plans only what is missing, in the same batches
    done = set(batches[0].keys)
    rest = plan(budget, done)
    assert [b.id for b in rest] == [b.id for b in batches[1:]]


def test_recipe_hyperparameters_are_instance_axes_of_their_own_recipe():
    config = config_io.resolve({"sae": {"recipe": ["relu_l1", "topk"], "l1_coefficient": [0.01, 0.1],
                                        "topk": {"k": [2, 3, 4]}}})
    points = config_io.expand(config)
    relu = [p for p in points if p["sae.recipe"] == "relu_l1"]
    topk = [p for p in points if p["sae.recipe"] == "topk"]
    assert sorted(p["sae.l1_coefficient"] for p in relu) == [0.01, 0.1]
    assert sorted(p["sae.k"] for p in topk) == [2, 3, 4]
    assert all("sae.k" not in p for p in relu) and all("sae.l1_coefficient" not in p for p in topk)
    batches = plan(config)
    assert sorted(len(b.points) for b in batches) == [2, 3]  # the recipe is a group axis, λ and k instance axes
    assert config_io.axes(config)["sae.k"] == [2, 3, 4]


def test_unknown_keys_and_impossible_values_are_rejected_with_their_name():
    with pytest.raises(ValueError, match="sae.l1_coef"):
        config_io.resolve({"sae": {"l1_coef": 1.0}})
    with pytest.raises(ValueError, match="feature.sparsity"):
        config_io.resolve({}, ["feature.sparsity=0.5"])
    with pytest.raises(ValueError, match="'sae.k'"):  # anthropic_2024 has no k
        config_io.resolve({"sae": {"k": 4}})
    with pytest.raises(ValueError, match="sae.topk.l1_coefficient"):
        config_io.resolve({"sae": {"recipe": "topk", "topk": {"l1_coefficient": 1.0}}})
    with pytest.raises(ValueError, match="sae.relu_l1"):  # a table for a recipe that is not swept
        config_io.resolve({"sae": {"relu_l1": {"l1_coefficient": 1.0}}})
    with pytest.raises(ValueError, match="features.l0"):
        config_io.resolve({"features": {"sparsity": 0.9, "l0": 2}})
    with pytest.raises(ValueError, match="run.executor"):
        config_io.resolve({"run": {"executor": ["local", "ray"]}})
    with pytest.raises(ValueError, match="sae.recipe"):
        config_io.resolve({"sae": {"recipe": "nope"}})
    with pytest.raises(ValueError, match="features.sparsity"):
        plan(config_io.resolve({"features": {"sparsity": [0.5, 1.5]}}))
    with pytest.raises(ValueError, match="features.l0"):
        plan(config_io.resolve({"features": {"l0": 30}}))  # more than n_features = 20
    with pytest.raises(ValueError, match="features.zipf_exponent"):
        plan(config_io.resolve({"features": {"zipf_exponent": 1.2}}))  # frequency is constant
    with pytest.raises(ValueError, match="source.noise"):
        plan(config_io.resolve({"source": {"noise": 0.1}}))  # noise belongs to a dictionary source
    with pytest.raises((ValueError, TypeError), match="sae.d_sae"):
        plan(config_io.resolve({"sae": {"d_sae": 0}}))
    with pytest.raises(ValueError, match="k"):  # k > d_sae: the recipe's own check, before training
        plan(config_io.resolve({"sae": {"recipe": "topk", "d_sae": 4, "k": 8}}))


def test_overrides_are_toml_values():
    config = config_io.resolve({}, ["sae.l1_coefficient=[0.1, 0.3]", "source.toy_model=linear", "seed=3"])
    assert config["sae"]["l1_coefficient"] == [0.1, 0.3]
    assert config["source"]["toy_model"] == "linear"
    assert config["seed"] == 3


def test_resolved_config_round_trips_through_toml():
    config = config_io.resolve({"features": {"sparsity": [0.5, 0.9]}, "description": 'say "hi"',
                                "sae": {"recipe": ["relu_l1", "topk"], "topk": {"k": [2, 4]}}})
    assert config_io.resolve(config_io.tomllib.loads(config_io.to_toml(config))) == config
    assert config_io.config_key(config) == config_io.config_key(config_io.resolve(config, ["run.max_instances=3"]))


def test_cli_run_report_and_dry_run(tmp_path, capsys):
    path = write(tmp_path, TINY.replace("steps = 300\n", ""))  # a dictionary source takes no toy-model steps
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--dry-run", "--set", "source.kind=dictionary"]) == 0
    printed = capsys.readouterr().out
    assert "8 configurations" in printed and "2 batches" in printed
    assert not out.exists()  # a dry run trains and writes nothing
    assert cli.main(["run", str(path), "--out", str(out), "--device", DEVICE, "--quiet",
                     "--set", "source.kind=dictionary"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and results["key"].is_unique
    assert set(results["source.kind"]) == {"dictionary"}
    assert results["recovered@0.9"].between(0, 1).all()
    assert len(pd.read_csv(out / "features.csv")) == 8 * 6
    assert (out / "recovery_heatmap.png").stat().st_size > 1000
    assert config_io.load(out / "config.toml")["source"]["kind"] == "dictionary"
    printed = capsys.readouterr().out
    assert "recovered@0.9" in printed and printed.count("\n") >= 9
    (out / "recovery_heatmap.png").unlink()
    assert cli.main(["report", str(out)]) == 0
    assert "8 of 8 configurations" in capsys.readouterr().out
    assert (out / "recovery_heatmap.png").exists()
    # the same command again finds every configuration done and trains nothing
    assert "0 batches" in dry_run(config_io.load(path, ["source.kind=dictionary"]), out)


def test_models_are_saved_when_asked_and_another_experiment_is_refused(tmp_path):
    import torch

    from toysuper import SAE, ToyModel

    config = config_io.load(write(tmp_path), ["source.steps=30", "sae.steps=20", "source.d_hidden=2",
                                              "features.sparsity=0.9", "run.save_models=true"])
    results, out = run(config, tmp_path / "run", device=DEVICE, quiet=True, figures=False)
    batch = results["batch"].iloc[0]
    sae = SAE.load(out / "models" / batch / "sae")
    assert sae.n_instances == 2 and sae.l1_coefficient.tolist() == pytest.approx([0.1, 0.3])
    assert sae.d_sae == 12 and torch.isfinite(sae.W_dec).all()
    toy = ToyModel.load(out / "models" / batch / "toy_model")
    assert toy.n_instances == 1 and torch.isfinite(toy.W).all()  # one sparsity: one toy model for both SAEs
    instances = json.loads((out / "models" / batch / "instances.json").read_text())
    assert sorted(i["key"] for i in instances) == sorted(results["key"])
    assert {i["toy_instance"] for i in instances} == {0} and sorted(i["sae_instance"] for i in instances) == [0, 1]
    other = config_io.resolve(config, ["sae.d_sae=13"])
    with pytest.raises(ValueError, match="sae.d_sae"):
        run(other, tmp_path / "run", device=DEVICE, quiet=True)


def test_cli_reports_bad_config_without_a_traceback(tmp_path, capsys):
    path = write(tmp_path, "[sae]\nwidth = 3\n", "bad.toml")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "sae.width" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_list_names_recipes_sources_and_metrics(capsys):
    assert cli.main(["list"]) == 0
    printed = capsys.readouterr().out
    for word in ("anthropic_2024", "l1_coefficient", "relu_output", "dictionary", "zipf", "mmcs", "recovered@0.9",
                 "features.sparsity"):
        assert word in printed


def test_ground_truth_options_build_the_distribution_they_name():
    import torch

    from toysuper.sweep import assemble

    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention
    config = config_io.resolve({
        "features": {"n_features": 16, "l0": 3.0, "frequency": "zipf", "zipf_exponent": [0.5, 1.0],
                     "magnitude": "folded_normal", "magnitude_params": {"mean": 2.0, "std": 0.1},
                     "correlated_groups": 2, "correlation": 0.3, "exclusive_groups": 1, "exclusive_group_size": 3,
                     "hierarchy_parents": 1, "hierarchy_children": 2, "child_prob": 0.25},
        "source": {"kind": "dictionary", "d_hidden": 8, "snr": 10.0, "dictionary": "low_coherence"}})
    batches = plan(config)
    assert len(batches) == 1 and len(batches[0].points) == 2  # the exponent is an instance axis
    dist = assemble.distribution(batches[0].points, DEVICE)
    assert dist.correlated_groups.groups == [(0, 1), (2, 3)]
    assert dist.exclusive_groups.groups == [(4, 5, 6)]
    assert dist.hierarchy.edges == [(7, (8, 9))]
    assert torch.allclose(dist.firing_prob[:, 8], 0.25 * dist.firing_prob[:, 7])  # child = parent x child_prob
    zipf = [assemble.firing_probabilities(p) for p in batches[0].points]
    assert all(abs(float(p.sum()) - 3.0) < 1e-4 for p in zipf) and zipf[1][0] > zipf[0][0]  # steeper law
    sample = dist.sample(4096)
    assert float(sample[sample > 0].mean()) > 1.8  # |N(2, 0.1)| magnitudes
    source = assemble.dictionary_source(batches[0].points, DEVICE)
    assert source.noise_std.gt(0).all()
    for bad, key in ((dict(features={"correlation": 0.5}), "features.correlation"),
                     (dict(features={"n_features": 4, "exclusive_groups": 2, "exclusive_group_size": 3}),
                      "features.n_features"),
                     (dict(features={"magnitude": "exponential", "magnitude_params": {"std": 1.0}}),
                      "features.magnitude_params.std"),
                     (dict(source={"snr": 5.0, "noise": 0.1, "kind": "dictionary"}), "source.snr"),
                     (dict(source={"dictionary": "low_coherence"}), "source.dictionary")):
        with pytest.raises(ValueError, match=key):
            plan(config_io.resolve(bad))


PACKING = """
name = "packing"
[features]
n_features = 6
sparsity = [0.8, 0.95]
[source]
kind = "KIND"
d_hidden = 3
steps = 200
[sae]
d_sae = 12
l1_coefficient = [0.1, 0.3]
steps = 150
batch_size = 256
[evaluate]
n_samples = 1000
threshold = [0.8, 0.9]
"""
PACKING_ONLY = ("batch", "instance", "toy_instance")  # where a row sits in its batch, nothing it computed


def assert_same_rows(a, b, index):
    """Every column but PACKING_ONLY equal: numbers to float32 rounding (rtol 1e-4), everything else exactly.

    Why rounding and not bits: one instance's matmuls and reductions run through other kernels
    than the same instance's inside a batch of 32 (a single matrix takes torch's mm path, a
    strided batch sums in another order), so the same random numbers train to weights that
    agree to about 1e-7 relative after these few hundred steps. A row seeded from its batch, as
    before, differs in the second decimal (MMCS 0.95 against 0.94).
    """
    a, b = a.set_index(index).sort_index(), b.set_index(index).sort_index()
    assert list(a.index) == list(b.index)
    columns = [c for c in a.columns if c not in PACKING_ONLY]
    assert set(columns) == {c for c in b.columns if c not in PACKING_ONLY}
    for column in columns:
        left, right = a[column], b[column]
        if pd.api.types.is_numeric_dtype(left) and not pd.api.types.is_bool_dtype(left):
            assert np.allclose(left.astype(float), right.astype(float), rtol=1e-4, atol=1e-6, equal_nan=True), column
        else:
            assert [str(v) if pd.notna(v) else "" for v in left] == [str(v) if pd.notna(v) else "" for v in right], column


@pytest.mark.parametrize("kind", ["toy_model", "dictionary"])
def test_a_row_depends_on_its_configuration_alone(tmp_path, kind):
    """The same grid packed 32 to a batch and 1 to a batch gives the same rows; so does a grid with one more
    sparsity, on the rows the two share; and grading variants re-grade one trained SAE."""
    text = PACKING.replace("KIND", kind)
    path = write(tmp_path, text if kind == "toy_model" else text.replace("steps = 200\n", ""))  # no toy model
    extra = ["source.snr=20.0"] if kind == "dictionary" else []  # noise from each point's own stream too
    wide = config_io.load(path, extra + ["run.max_instances=32"])
    narrow = config_io.load(path, extra + ["run.max_instances=1"])
    more = config_io.load(path, extra + ["run.max_instances=32", "features.sparsity=[0.8, 0.9, 0.95]"])
    assert [len(b.points) for b in plan(wide)] == [8] and [b.n_saes for b in plan(wide)] == [4]
    assert [b.n_saes for b in plan(narrow)] == [1] * 4  # a threshold never separates a point from its SAE
    runs = {}
    for name, config in (("wide", wide), ("narrow", narrow), ("more", more)):
        results, out = run(config, tmp_path / name, device=DEVICE, quiet=True, figures=False)
        runs[name] = (results, pd.read_csv(out / "features.csv", dtype={"key": str}))
    assert runs["wide"][0]["batch"].nunique() == 1 and runs["narrow"][0]["batch"].nunique() == 4
    assert_same_rows(runs["wide"][0], runs["narrow"][0], "key")
    assert_same_rows(runs["wide"][1], runs["narrow"][1], ["key", "feature"])
    shared = runs["more"][0][runs["more"][0]["key"].isin(runs["wide"][0]["key"])]
    assert len(shared) == 8 and len(runs["more"][0]) == 12
    assert_same_rows(runs["wide"][0], shared, "key")
    assert_same_rows(runs["wide"][1], runs["more"][1][runs["more"][1]["key"].isin(shared["key"])], ["key", "feature"])
    # the two thresholds of one configuration grade one SAE: equal scores, recovered@0.8 >= recovered@0.9
    results = runs["wide"][0]
    by_threshold = {t: results[results["evaluate.threshold"] == t].sort_values(["features.sparsity",
                                                                                 "sae.l1_coefficient"])
                    for t in (0.8, 0.9)}
    for column in ("mmcs", "fvu", "l0", "activation_mcc"):
        assert by_threshold[0.8][column].tolist() == by_threshold[0.9][column].tolist()
    assert (by_threshold[0.8]["recovered@0.8"].to_numpy() >= by_threshold[0.9]["recovered@0.9"].to_numpy()).all()


FAILING = """
name = "failing"
[features]
n_features = 6
sparsity = 0.9
[source]
kind = "dictionary"
d_hidden = [3, 4]
[sae]
d_sae = 12
l1_coefficient = [0.1, 0.3, 0.7]
steps = 100
batch_size = 256
[evaluate]
n_samples = 1000
"""


def test_a_failure_spoils_only_its_own_row_and_a_rerun_retries_only_it(tmp_path, monkeypatch, capsys):
    from toysuper.sweep import runner

    path = write(tmp_path, FAILING)
    real_train_sae, calls = runner.train_sae, []

    def diverging(sae, source, **kwargs):  # lambda = 0.3 with d_hidden = 3 diverges, as a too-large lr would
        calls.append(sae.l1_coefficient.tolist())
        result = real_train_sae(sae, source, **kwargs)
        if sae.d_hidden == 3 and any(abs(v - 0.3) < 1e-6 for v in sae.l1_coefficient.tolist()):
            raise ValueError("SAE loss became NaN/inf at step 99")
        return result

    monkeypatch.setattr(runner, "train_sae", diverging)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--device", DEVICE, "--quiet"]) == 1
    printed = capsys.readouterr()
    assert "1 configuration(s) failed" in printed.err and "l1_coefficient=0.3" in printed.err
    results = pd.read_csv(out / "results.csv", dtype={"key": str})
    assert len(results) == 6
    failed = results[results["status"] == "failed"]
    assert len(failed) == 1 and failed["source.d_hidden"].tolist() == [3]
    assert failed["sae.l1_coefficient"].tolist() == [0.3] and "NaN" in failed["error"].iloc[0]
    assert failed["mmcs"].isna().all()
    done = results[results["status"] == "ok"]
    assert done["mmcs"].notna().all() and len(done) == 5  # its batch-mates and the other batch kept their results
    # the batch-mates' rows are those of a run without the failing configuration (their streams are their own)
    clean = config_io.load(path, ["sae.l1_coefficient=[0.1, 0.7]", "source.d_hidden=3"])
    expected, _ = run(clean, tmp_path / "clean", device=DEVICE, quiet=True, figures=False)
    mates = done[done["source.d_hidden"] == 3]
    assert_same_rows(expected.drop(columns=["status", "error"]), mates.drop(columns=["status", "error"]), "key")
    # report lists the failure; a rerun retries it alone and, once it trains, replaces the failed row
    assert cli.main(["report", str(out)]) == 0
    reported = capsys.readouterr().out
    assert "5 of 6 configurations finished" in reported and "1 configuration(s) failed" in reported
    assert "SAE loss became NaN/inf at step 99" in reported
    assert [b.keys for b in plan(config_io.load(path), RunStore(out).done_keys())] == [failed["key"].tolist()]
    monkeypatch.setattr(runner, "train_sae", real_train_sae)
    assert cli.main(["run", str(path), "--out", str(out), "--device", DEVICE, "--quiet"]) == 0
    again = pd.read_csv(out / "results.csv", dtype={"key": str})
    assert len(again) == 6 and (again["status"] == "ok").all()
    assert_same_rows(done, again[again["key"].isin(done["key"])], "key")  # the finished rows were not redone


def test_an_sae_that_diverges_without_a_nan_is_a_failed_row(tmp_path):
    path = write(tmp_path, FAILING)
    config = config_io.load(path, ["source.d_hidden=3", "sae.l1_coefficient=0.1", "sae.lr=1e4"])
    with pytest.warns(RuntimeWarning, match="diverged"):
        results, _ = run(config, tmp_path / "run", device=DEVICE, quiet=True, figures=False)
    assert results["status"].tolist() == ["failed"]
    assert results["error"].iloc[0].startswith("diverged") and "sae.lr" in results["error"].iloc[0]


def test_a_large_grid_is_planned_under_a_progress_bar(monkeypatch):
    """Issue 26 item 6: a long axis says what it is doing while every point is checked (a bar on a terminal)."""
    from toysuper.sweep import planner

    shown = []
    monkeypatch.setattr(planner, "PROGRESS_AT", 50)
    monkeypatch.setattr(planner, "progress_bar", lambda items, desc, quiet: shown.append((desc, quiet)) or items)
    config = config_io.resolve({"source": {"kind": "dictionary"}, "features": {"sparsity": [i / 60 for i in range(60)]}})
    assert sum(len(b.points) for b in plan(config)) == 60
    assert shown == [("checking configurations", False)]
    plan(config_io.resolve({"features": {"sparsity": [0.5, 0.9]}}))
    assert shown[-1] == ("checking configurations", True)


def test_worlds_are_a_module_of_their_own_above_sources():
    """Issue 26 item 9 / issue 23 item 3: `import toysuper.worlds` works, as the README writes it."""
    import toysuper
    import toysuper.worlds

    assert toysuper.worlds.synthsaebench.__module__ == "toysuper.worlds" and "synthsaebench_16k" in toysuper.worlds.WORLDS

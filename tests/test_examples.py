"""examples/my_recipes.py end to end: an outside recipe named by import path in a sweep run by Ray
workers, its SAEs saved, then loaded and graded in a fresh process that reproduces the sweep's rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray

from toysuper.grade.bakeoff import TaskSize, run_recipe, sweep
from toysuper.sae.recipes import registry
from toysuper.sweep import config as config_io
from toysuper.sweep.experiments import run
from device import DEVICE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SWEEP = {
    "name": "outside",
    "features": {"n_features": 12, "sparsity": 0.85},
    "source": {"kind": "dictionary", "d_hidden": 8},
    "sae": {"recipe": "my_recipes:PAnnealing", "d_sae": 12, "lp_coefficient": [0.1, 0.3], "steps": 150,
            "batch_size": 256},
    "evaluate": {"n_samples": 1000},
    "run": {"save_models": True},
}
# In a fresh process: load the saved SAE (importing its recipe from config.json's path), rebuild the
# sweep's source from the run's config.toml, grade with the sweep's evaluation seeds.
GRADE = """
import json, sys
from pathlib import Path
import toysuper as ts
from toysuper.sweep import assemble, config as config_io
run = Path(sys.argv[1])
assert "my_recipes" not in sys.modules
config = config_io.load(run / "config.toml")
by_key = {config_io.point_key(p): p for p in config_io.expand(config)}
(folder,) = (run / "models").iterdir()
instances = json.loads((folder / "instances.json").read_text())
sae = ts.SAE.load(folder / "sae", device="cpu")
points = [by_key[i["key"]] for i in sorted(instances, key=lambda i: i["sae_instance"])]
source = assemble.dictionary_source(points, "cpu")
seeds = [config_io.stream_seed(p, "evaluate") for p in points]
report = ts.evaluate(sae, source, n_samples=1000, seed=seeds, quiet=True)
print(json.dumps({"recipe": type(sae.recipe).__module__ + ":" + type(sae.recipe).__name__, "options": sae.options,
                  "lp_coefficient": sae.lp_coefficient.tolist(), "keys": [i["key"] for i in instances],
                  "mmcs": report.summary["mmcs"].tolist(), "l0": report.summary["l0"].tolist()}))
"""


@pytest.fixture
def examples_on_path(monkeypatch):
    """examples/ on this process's path only (Ray workers get it from the executor, not from $PYTHONPATH);
    the example's recipe is unregistered afterwards, so that later tests see the built-ins alone."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    before = dict(registry._RECIPES)
    yield
    registry._RECIPES.clear()
    registry._RECIPES.update(before)


def test_outside_recipe_sweeps_on_ray_saves_and_grades_in_a_fresh_process(tmp_path, examples_on_path):
    config = config_io.resolve(SWEEP)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        results, folder = run(config, tmp_path / "run", device=DEVICE, quiet=True, executor="ray", figures=True)
    finally:
        ray.shutdown()
    assert (results["status"] == "ok").all() and len(results) == 2, results.get("error")
    assert list(folder.glob("*.png"))  # the figures drew an outside recipe too
    path = os.pathsep.join([str(EXAMPLES), str(ROOT), os.environ.get("PYTHONPATH", "")])
    fresh = subprocess.run([sys.executable, "-c", GRADE, str(folder)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path})
    assert fresh.returncode == 0, fresh.stderr
    graded = json.loads(fresh.stdout)
    assert graded["recipe"] == "my_recipes:PAnnealing" and graded["options"] == {"anneal": True}
    assert graded["lp_coefficient"] == pytest.approx([0.1, 0.3])
    # the fresh process grades exactly what the sweep graded, instance by instance
    rows = results.set_index("key").loc[graded["keys"]]
    assert graded["mmcs"] == pytest.approx(rows["mmcs"].tolist(), abs=1e-9)
    assert graded["l0"] == pytest.approx(rows["l0"].tolist(), abs=1e-9)
    assert graded["l0"][0] > graded["l0"][1]  # the larger L_p coefficient fires fewer latents


def test_outside_recipe_in_the_bakeoff(examples_on_path):
    size = TaskSize(n_features=16, d_hidden=8, d_sae=16, samples=256 * 40, batch_size=256)
    instances = sweep("my_recipes:PAnnealing", factors=(1.0, 4.0))
    assert [row["lp_coefficient"] for row in instances] == pytest.approx([0.3, 1.2])
    table = run_recipe("my_recipes:PAnnealing", instances, size, device=DEVICE, n_eval=2000)
    assert list(table["recipe"]) == ["my_recipes:PAnnealing"] * 2
    assert table["hyperparameters"].str.startswith("lp_coefficient=").all()
    assert table["l0"].iloc[0] > table["l0"].iloc[1]


def test_the_docs_show_the_example_as_it_is():
    doc = (ROOT / "docs" / "adding_a_recipe.md").read_text()
    shown = doc.split("```python\n")[1].split("```")[0]
    assert shown.strip() and shown.strip() in (EXAMPLES / "my_recipes.py").read_text()


def test_the_cli_finds_an_outside_recipe_in_the_current_folder(tmp_path):
    (tmp_path / "sweep.toml").write_text('[sae]\nrecipe = "my_recipes:PAnnealing"\nlp_coefficient = [0.1, 0.3]\n')
    command = [sys.executable, "-c", "import sys; from toysuper.sweep.cli import main; sys.path.remove(''); "
               "sys.exit(main())", "run", str(tmp_path / "sweep.toml"), "--dry-run", "--out", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=EXAMPLES, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # not examples/: the folder it runs in
    assert done.returncode == 0, done.stderr
    assert "2 configurations" in done.stdout

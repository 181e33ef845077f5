"""The Ray executor, for real, on a local Ray instance (the `ray` extra; CI installs it)."""

import pandas as pd
import ray

from toysuper.sweep import config as config_io
from toysuper.sweep.experiments import run
from device import DEVICE

SWEEP = {
    "name": "ray",
    "seed": [0, 1],
    "features": {"n_features": 6, "sparsity": [0.8, 0.95]},
    "source": {"d_hidden": [2, 3], "steps": 200},
    "sae": {"d_sae": 12, "l1_coefficient": 0.3, "steps": 150, "batch_size": 256},
    "evaluate": {"n_samples": 1000},
    "run": {"max_instances": 2},  # four batches per run: more tasks than Ray workers
}


def test_ray_executor_writes_the_same_rows_as_in_process(tmp_path):
    config = config_io.resolve(SWEEP)
    local, _ = run(config, tmp_path / "local", device=DEVICE, quiet=True, executor="local", figures=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        distributed, _ = run(config, tmp_path / "ray", device=DEVICE, quiet=True, executor="ray", figures=False)
        assert ray.is_initialized()  # an instance the caller started is left running
    finally:
        ray.shutdown()
    assert len(local) == 8 and local["batch"].nunique() == 4
    # same seeds, same batches: the same rows, whichever process trained them and in whatever order
    pd.testing.assert_frame_equal(distributed.sort_values("key").reset_index(drop=True),
                                  local.sort_values("key").reset_index(drop=True))
    sessions = (tmp_path / "ray" / "meta.json").read_text()
    assert '"executor": "ray"' in sessions
    stored = pd.read_csv(tmp_path / "ray" / "results.csv", dtype={"key": str})
    assert sorted(stored["key"]) == sorted(local["key"])

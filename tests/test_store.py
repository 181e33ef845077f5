import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from toysuper.sweep import config as config_io
from toysuper.sweep.planner import plan
from toysuper.sweep.runner import BatchResult
from toysuper.sweep.store import RunStore

# Three shapes (d_hidden) -> three batches of two instances, each a second or two of training.
THREE_BATCHES = """
name = "resume"
seed = [0, 1]
[features]
n_features = 8
sparsity = 0.9
[source]
kind = "dictionary"
d_hidden = [3, 4, 5]
[sae]
d_sae = 16
l1_coefficient = 0.3
steps = 400
batch_size = 512
[evaluate]
n_samples = 2000
"""


ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the subprocesses import this checkout, not an installed copy


def _rows(path):
    return pd.read_csv(path, dtype={"key": str, "batch": str}) if path.exists() else pd.DataFrame()


def test_a_killed_run_resumes_with_every_row_once(tmp_path):
    path = tmp_path / "resume.toml"
    path.write_text(THREE_BATCHES)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "toysuper.sweep.cli", "run", str(path), "--out", str(out), "--device", "cpu",
               "--quiet"]
    expected = {config_io.point_key(p) for p in config_io.expand(config_io.load(path))}
    assert len(expected) == 6 and len(plan(config_io.load(path))) == 3

    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 120
    while len(_rows(out / "results.csv")) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # as soon as the first batch's rows are in
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    before = _rows(out / "results.csv")
    assert 0 < len(before) < 6  # the kill did interrupt the run
    assert set(before["key"]) <= expected and before["key"].is_unique
    assert before[["mmcs", "l0"]].notna().all().all()  # only whole rows

    # The same command again (checking on the way that the in-process executor never imports Ray).
    rerun = subprocess.run([sys.executable, "-c", "import sys; from toysuper.sweep.cli import main; code = main(sys.argv[1:]); "
                            "sys.exit(code or (3 if 'ray' in sys.modules else 0))", *command[3:]],
                           cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _rows(out / "results.csv")
    assert sorted(after["key"]) == sorted(expected)  # every row, each exactly once
    kept = after.set_index("key").loc[before["key"]].reset_index()
    pd.testing.assert_frame_equal(kept[before.columns], before)  # finished rows were not redone
    features = pd.read_csv(out / "features.csv", dtype={"key": str})
    assert len(features) == 6 * 8 and not features.duplicated(["key", "feature"]).any()
    assert len(list((out / "batches").glob("*.rows.csv"))) == 3
    assert len(RunStore(out).meta()["sessions"]) == 2


def _fake_result(batch, value):
    rows = pd.DataFrame({"key": batch.keys, "batch": batch.id, "instance": range(len(batch.keys)), "mmcs": value})
    features = pd.DataFrame({"key": batch.keys, "feature": 0, "matched_cos": value})
    return BatchResult(batch.id, rows, features, seconds=0.0)


def test_store_rebuilds_results_from_batch_files_after_a_crash_between_them(tmp_path):
    config = config_io.resolve({"source": {"d_hidden": [2, 3]}, "features": {"sparsity": [0.5, 0.9]}})
    batches = plan(config)
    store = RunStore(tmp_path / "run")
    store.open(config)
    store.commit(_fake_result(batches[0], 0.25))
    store.commit(_fake_result(batches[1], 0.5))
    # a crash after batch 1's files but before results.csv took its rows: results.csv still has batch 0 only
    (tmp_path / "run" / "results.csv").write_text(_fake_result(batches[0], 0.25).rows.to_csv(index=False))
    store = RunStore(tmp_path / "run")
    store.open(config)
    results = store.results()
    assert sorted(results["key"]) == sorted(batches[0].keys + batches[1].keys)
    assert store.done_keys() == set(results["key"])
    assert plan(config, store.done_keys()) == []
    # committing a batch again (a rerun that raced) never duplicates a row
    store.commit(_fake_result(batches[1], 0.5))
    assert len(_rows(tmp_path / "run" / "results.csv")) == 4
    assert len(_rows(tmp_path / "run" / "features.csv")) == 4
    assert not list((tmp_path / "run").glob(".*.tmp"))

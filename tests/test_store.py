import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from toysuper.sweep import config as config_io
from toysuper.sweep.planner import plan
from toysuper.sweep.runner import BatchResult
from toysuper.sweep.store import RunStore
from device import DEVICE

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
    command = [sys.executable, "-m", "toysuper.sweep.cli", "run", str(path), "--out", str(out), "--device", DEVICE,
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


def _damaged_folder(tmp_path):
    """A run folder of two finished batches (two configurations each), written from made-up results."""
    config = config_io.resolve({"source": {"kind": "dictionary", "d_hidden": [2, 3]},
                                "features": {"sparsity": [0.5, 0.9]}})
    batches = plan(config)
    store = RunStore(tmp_path / "run")
    store.open(config)
    for batch, value in zip(batches, (0.25, 0.5)):
        result = _fake_result(batch, value)
        result.rows = result.rows.assign(**{"recovered@0.9": value, "l0": 1.0, "n_graded": 20,
                                            "source.d_hidden": batch.points[0]["source.d_hidden"],
                                            "features.sparsity": [p["features.sparsity"] for p in batch.points]})
        store.commit(result)
    return config, batches, store


def test_report_rebuilds_missing_or_corrupt_tables_from_the_batch_files(tmp_path, capsys):
    from toysuper.sweep import cli

    config, batches, store = _damaged_folder(tmp_path)
    expected = sorted(batches[0].keys + batches[1].keys)
    damage = {"missing": None, "garbled": b"\x00\xff\xfe key,batch\n1,2,3,4\n\"unterminated",
              "headerless": b"just some text\n"}
    for name, content in damage.items():
        for path in (store.results_path, store.features_path):
            path.unlink()
            if content is not None:
                path.write_bytes(content)
        assert cli.main(["report", str(store.directory)]) == 0, name
        out = capsys.readouterr().out
        assert "4 of 4 configurations finished" in out and "rebuilt results.csv" in out, name
        assert sorted(_rows(store.results_path)["key"]) == expected, name
        assert sorted(_rows(store.features_path)["key"]) == expected, name


def test_a_corrupt_batch_file_is_named_and_the_rest_carries_on(tmp_path, capsys):
    from toysuper.sweep import cli

    config, batches, store = _damaged_folder(tmp_path)
    broken = store.batches / f"{batches[0].id}.rows.csv"
    broken.write_text("key,batch,mmcs\n\"unterminated,1\n")
    store.results_path.unlink()
    assert cli.main(["report", str(store.directory)]) == 0
    captured = capsys.readouterr()
    assert str(broken) in captured.err and "not a readable CSV" in captured.err
    assert "2 of 4 configurations finished" in captured.out  # the other batch still reports
    assert sorted(_rows(store.results_path)["key"]) == sorted(batches[1].keys)
    # a run moves the broken file aside, names it, and plans its configurations again
    features = store.batches / f"{batches[1].id}.features.csv"
    features.write_text("")  # a batch whose rows are fine but whose features are lost runs again too
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        RunStore(store.directory).open(config)
    assert broken.with_name(broken.name + ".corrupt").exists() and not broken.exists()
    assert RunStore(store.directory).done_keys() == set()
    assert sorted(k for b in plan(config, set()) for k in b.keys) == sorted(batches[0].keys + batches[1].keys)
    assert sorted(_rows(store.results_path)["key"]) == sorted(batches[1].keys)  # never deleted, only retrained


def test_a_failed_row_gives_way_to_a_later_try_and_a_finished_row_never_does(tmp_path):
    config, batches, store = _damaged_folder(tmp_path)
    failed = _fake_result(batches[0], float("nan"))
    failed.rows = failed.rows.assign(status="failed", error="ValueError: boom")
    store.commit(failed)  # a rerun that raced a finished batch and failed: the finished rows stay
    assert (RunStore(store.directory).results()["mmcs"].notna()).all()
    late = _fake_result(batches[0], 0.75)
    store.commit(late)  # ... and so does a late finished one
    assert sorted(RunStore(store.directory).results()["mmcs"]) == [0.25, 0.25, 0.5, 0.5]


def test_report_on_a_read_only_folder_reports_without_writing(tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    from toysuper.sweep import cli, store as store_module

    config, batches, store = _damaged_folder(tmp_path)
    store.results_path.unlink()  # report would rebuild it, but may not write

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_module, "atomic_write", refuse)  # root ignores chmod, so the file system is faked
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse)
    assert cli.main(["report", str(store.directory)]) == 0
    captured = capsys.readouterr()
    assert "4 of 4 configurations finished" in captured.out
    assert "cannot update the tables" in captured.err and "cannot write the figures" in captured.err
    assert not store.results_path.exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_report_never_deletes_or_shrinks_a_results_file(tmp_path, capsys, damage):
    """Issue 26 item 2: with a batch's rows file lost, report keeps results.csv and features.csv byte for byte and
    names the batch that `toysuper run` will retrain."""
    from toysuper.sweep import cli

    config, batches, store = _damaged_folder(tmp_path)
    before = {path: path.read_bytes() for path in (store.results_path, store.features_path)}
    lost = store.batches / f"{batches[0].id}.rows.csv"
    lost.unlink() if damage == "missing" else lost.write_text("key,batch,mmcs\n\"unterminated,1\n")
    assert cli.main(["report", str(store.directory)]) == 0
    out = capsys.readouterr().out
    assert batches[0].id in out and "toysuper run" in out and "rebuilt" not in out, out
    assert {path: path.read_bytes() for path in before} == before
    RunStore(store.directory).open(config)  # nor does a run, which sets a broken file aside and retrains its rows
    assert RunStore(store.directory).done_keys() == set(batches[1].keys)
    assert {path: path.read_bytes() for path in before} == before


def test_a_hand_edited_results_csv_is_named_and_left(tmp_path, capsys):
    from toysuper.sweep import cli

    config, batches, store = _damaged_folder(tmp_path)
    edited = _rows(store.results_path).assign(mmcs=0.99)
    store.results_path.write_text(edited.to_csv(index=False))
    text = store.results_path.read_text()
    assert cli.main(["report", str(store.directory)]) == 0
    out = capsys.readouterr().out
    assert "results.csv differs from the batch files in 4 row(s) (columns mmcs)" in out, out
    assert store.results_path.read_text() == text


def test_integer_columns_stay_integers_after_a_retried_row(tmp_path):
    """Issue 26 item 6: a failed try, then a finished one, leaves the files a clean run leaves."""
    config = config_io.resolve({"source": {"kind": "dictionary", "d_hidden": 2}, "features": {"sparsity": [0.5, 0.9]}})
    batch = plan(config)[0]

    def finished():
        result = _fake_result(batch, 0.5)
        result.rows = result.rows[["key", "batch", "instance"]].assign(status="ok", error="", mmcs=0.5, n_graded=6)
        return result

    failed = _fake_result(batch, 0.5)
    failed.rows = failed.rows[["key", "batch"]].assign(instance=-1, status="failed", error="ValueError: boom")
    failed.features = failed.features.iloc[:0]
    clean, retried = RunStore(tmp_path / "clean"), RunStore(tmp_path / "retried")
    clean.open(config)
    clean.commit(finished())
    retried.open(config)
    retried.commit(failed)
    retried.commit(finished())
    assert retried.results_path.read_text() == clean.results_path.read_text()
    assert "6.0" not in retried.results_path.read_text()


def test_a_full_disk_names_the_path_and_leaves_no_partial_batch(tmp_path, monkeypatch):
    import errno

    from toysuper.sweep import store as store_module

    config, batches, store = _damaged_folder(tmp_path)
    calls = []

    def full(fd):
        calls.append(fd)
        if len(calls) == 3:  # the rows file, after the features and the batch's json
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", full)
    before = sorted(p.name for p in store.batches.iterdir())
    with pytest.raises(OSError, match="No space left on device") as raised:
        store.commit(_fake_result(batches[0], 0.75))
    assert raised.value.filename.endswith(".rows.csv")
    assert sorted(p.name for p in store.batches.iterdir()) == before  # no .tmp, no batch without rows


@pytest.mark.parametrize("content", ["", "name = \n", "[features]\nn_features = 'x'\n"])
def test_a_run_folder_with_an_unusable_config_is_named(tmp_path, capsys, content):
    from toysuper.sweep import cli

    config, batches, store = _damaged_folder(tmp_path)
    (store.directory / "config.toml").write_text(content)
    assert cli.main(["report", str(store.directory)]) == 2
    error = capsys.readouterr().err
    assert "config.toml" in error and "configurations finished" not in error, error

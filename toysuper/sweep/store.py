"""The results store: one run folder per experiment, safe to interrupt and to resume.

    RUN/config.toml           the resolved config (a rerun must match it)
    RUN/meta.json             package versions, git commit, seeds, each session's start
    RUN/batches/ID.rows.csv   one file per finished batch, written atomically: its presence
                              means the batch is done (ID.features.csv and ID.json beside it)
    RUN/results.csv           one row per (configuration, instance), appended as batches finish
    RUN/features.csv          one row per (configuration, true feature)
    RUN/models/ID/            trained SAEs and toy models (safetensors + JSON), when asked

Every file is written to a temporary name, flushed, fsynced and renamed into place, so a
kill at any moment leaves either the old file or the new one, never a partial row. The
batch files are the truth; results.csv and features.csv are rebuilt from them when a
previous session died between the two.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from . import config as config_io

RESULTS = "results.csv"
FEATURES = "features.csv"
CONFIG = "config.toml"
META = "meta.json"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, nothing between."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _csv(table: pd.DataFrame) -> str:
    return table.to_csv(index=False)


def package_versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("toysuper", "torch", "numpy", "pandas", "scipy", "seaborn", "safetensors", "ray"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> dict:
    """The commit of the toysuper source tree, and whether it had uncommitted changes (None outside git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


class RunStore:
    """A run folder. `open` it with the resolved config, `commit` each finished batch, read `results()`."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.batches = self.directory / "batches"

    @property
    def results_path(self) -> Path:
        return self.directory / RESULTS

    @property
    def features_path(self) -> Path:
        return self.directory / FEATURES

    def exists(self) -> bool:
        return (self.directory / CONFIG).exists()

    def read_config(self) -> dict:
        return config_io.load(self.directory / CONFIG)

    def check_config(self, config: dict) -> None:
        """Raise ValueError if this folder holds a different experiment than `config`."""
        if not self.exists():
            return
        differences = config_io.identity_differences(self.read_config(), config)
        if differences:
            raise ValueError(f"run folder {str(self.directory)!r} holds a different experiment: "
                             f"{', '.join(differences)} differ from its config.toml; give another --out "
                             f"(or delete the folder) to start afresh")

    def open(self, config: dict, executor: str = "local") -> None:
        """Create the folder (or check it holds this experiment), write config and metadata, tidy up."""
        self.check_config(config)
        self.batches.mkdir(parents=True, exist_ok=True)
        for stale in list(self.directory.glob(".*.tmp")) + list(self.batches.glob(".*.tmp")):
            stale.unlink(missing_ok=True)  # left by a session killed mid-write
        if not self.exists():
            atomic_write(self.directory / CONFIG, config_io.to_toml(config))
        meta = self.meta()
        if not meta:
            seeds = config["seed"] if isinstance(config["seed"], list) else [config["seed"]]
            meta = {"name": config["name"], "config_key": config_io.config_key(config), "seeds": seeds,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(),
                    **git_commit(), "sessions": []}
        meta["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "executor": executor,
                                 "argv": sys.argv, "versions": package_versions(), **git_commit()})
        atomic_write(self.directory / META, json.dumps(meta, indent=2))
        self._reconcile()

    def meta(self) -> dict:
        path = self.directory / META
        return json.loads(path.read_text()) if path.exists() else {}

    def finished_batches(self) -> list[Path]:
        """Row files of the finished batches, oldest first."""
        return sorted(self.batches.glob("*.rows.csv"), key=lambda p: (p.stat().st_mtime_ns, p.name))

    def done_keys(self) -> set[str]:
        """Keys of every configuration with a finished row."""
        keys: set[str] = set()
        for path in self.finished_batches():
            keys.update(pd.read_csv(path, usecols=["key"], dtype={"key": str})["key"])
        return keys

    def commit(self, result) -> None:
        """Store one finished batch (a runner.BatchResult): its files first, then its rows, then the merged tables."""
        batch = result.batch_id
        if result.sae is not None:
            result.sae.save(self.directory / "models" / batch / "sae")
            if result.toy_model is not None:
                save_toy_model(result.toy_model, self.directory / "models" / batch / "toy_model", result.toy_instance)
        atomic_write(self.batches / f"{batch}.features.csv", _csv(result.features))
        atomic_write(self.batches / f"{batch}.json", json.dumps({"batch": batch, "seconds": result.seconds,
                                                                 "instances": len(result.rows),
                                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        atomic_write(self.batches / f"{batch}.rows.csv", _csv(result.rows))  # from here on the batch is done
        self._append(result.rows, result.features)

    def _append(self, rows: pd.DataFrame, features: pd.DataFrame) -> None:
        """Add a batch's rows to results.csv and features.csv, skipping any key already there."""
        for path, new in ((self.features_path, features), (self.results_path, rows)):
            old = _read(path)
            if not old.empty:
                new = new[~new["key"].isin(set(old["key"]))]
                if new.empty:
                    continue
            merged = new if old.empty else pd.concat([old, new], ignore_index=True)
            atomic_write(path, _csv(merged))

    def _reconcile(self) -> None:
        """Bring results.csv and features.csv up to date with the finished batch files."""
        have = set(_read(self.results_path).get("key", pd.Series(dtype=str)))
        have_features = set(_read(self.features_path).get("key", pd.Series(dtype=str)))
        for path in self.finished_batches():
            rows = pd.read_csv(path, dtype={"key": str, "batch": str})
            missing_rows = not set(rows["key"]) <= have
            missing_features = not set(rows["key"]) <= have_features
            if missing_rows or missing_features:
                features_file = path.with_name(path.name.replace(".rows.csv", ".features.csv"))
                self._append(rows, pd.read_csv(features_file, dtype={"key": str}))
                have |= set(rows["key"])
                have_features |= set(rows["key"])

    def results(self) -> pd.DataFrame:
        """Every finished row, once each."""
        return _read(self.results_path).drop_duplicates("key", ignore_index=True)

    def features(self) -> pd.DataFrame:
        """Every finished per-feature row, once each."""
        return _read(self.features_path).drop_duplicates(["key", "feature"], ignore_index=True)


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path, dtype={"key": str, "batch": str})


def save_toy_model(model, directory, instances=None) -> Path:
    """Write a toy model as weights.safetensors plus config.json (what ToyModel needs to be rebuilt)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()},
              str(directory / "weights.safetensors"))
    config = {"n_features": model.n_features, "d_hidden": model.d_hidden, "n_instances": model.n_instances,
              "kind": model.kind, "sae_instance_to_toy_instance": instances}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory

"""The results store: one run folder per experiment, safe to interrupt and to resume.

    RUN/config.toml           the resolved config (a rerun must match it)
    RUN/meta.json             package versions, git commit, seeds, each session's start
    RUN/batches/ID.rows.csv   one file per finished batch, written atomically: its presence
                              means the batch is done (ID.features.csv and ID.json beside it;
                              a second try of the same batch writes ID.2.rows.csv, ...)
    RUN/results.csv           one row per (configuration, instance), appended as batches finish
    RUN/features.csv          one row per (configuration, true feature)
    RUN/models/ID/            trained SAEs and toy models (safetensors + JSON) and instances.json
                              (which configuration each instance is), when asked

Every file is written to a temporary name, fsynced and renamed into place, so a kill leaves the
old file or the new one. The batch files are the truth; results.csv and features.csv are rebuilt
from them when missing, unreadable or behind, but never with a row fewer. A failed configuration's
row (status "failed", the reason in `error`) gives way to a rerun's.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from . import config as config_io

OK, FAILED = "ok", "failed"
"""A row's status: its configuration finished, or failed (the reason in its `error` column)."""

CONFIG, META = "config.toml", "meta.json"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, nothing between."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:  # a full disk, say: no half-written temporary left behind, and the path named
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def package_versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("toysuper", "torch", "numpy", "pandas", "scipy", "seaborn", "safetensors", "ray"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def git_commit() -> dict:
    """The commit of the toysuper source tree, and whether it had uncommitted changes (None outside git)."""
    def git(*args) -> str:
        root = str(Path(__file__).resolve().parent.parent)
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--untracked-files=no") != ""}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


class RunStore:
    """A run folder. `open` it with the resolved config, `commit` each finished batch, read `results()`."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.batches = self.directory / "batches"
        self.results_path, self.features_path = self.directory / "results.csv", self.directory / "features.csv"

    def exists(self) -> bool:
        return (self.directory / CONFIG).exists()

    def read_config(self) -> dict:
        path = self.directory / CONFIG
        try:
            if not path.read_text(encoding="utf-8-sig").strip():
                raise ValueError("it is empty")
            return config_io.load(path)
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as error:
            raise ValueError(f"the run folder {str(self.directory)!r} has a config.toml toysuper cannot use "
                             f"({error}); it is the experiment's record, so rerun into a new --out") from error

    def check_config(self, config: dict) -> None:
        if not self.exists():
            return
        differences = config_io.identity_differences(self.read_config(), config)
        if differences:
            raise ValueError(f"run folder {str(self.directory)!r} holds a different experiment: "
                             f"{', '.join(differences)} differ from its config.toml; give another --out "
                             f"(or delete the folder) to start afresh")

    def check_folder(self) -> None:
        """Refuse a file, or a folder holding files of its own (a user's results.csv) but no config.toml."""
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(f"the run folder {str(self.directory)!r} is a file; give --out a folder")
        if self.directory.is_dir() and not self.exists():
            other = sorted(p.name for p in self.directory.iterdir()
                           if p.name != "batches" and not p.name.endswith(".tmp"))
            if other:
                raise ValueError(f"{str(self.directory)!r} is not a run folder (no config.toml) but holds "
                                 f"{', '.join(other[:5])}{', ...' if len(other) > 5 else ''}; give --out a new or "
                                 f"empty folder, so that nothing of yours is overwritten")

    def open(self, config: dict, executor: str = "local") -> None:
        """Create the folder (or check it holds this experiment), write config and metadata, tidy up."""
        self.check_config(config)
        self.check_folder()
        try:
            self.batches.mkdir(parents=True, exist_ok=True)
            probe = self.batches / f".probe.{os.getpid()}.tmp"
            probe.write_bytes(b"")  # a folder we can list but not write into fails here, before any training
            probe.unlink()
        except OSError as error:
            raise ValueError(f"cannot write the run folder {str(self.directory)!r}: {error.strerror or error}"
                             + (f" ({error.filename})" if error.filename else "")) from error
        for stale in list(self.directory.glob(".*.tmp")) + list(self.batches.glob(".*.tmp")):
            stale.unlink(missing_ok=True)  # left by a session killed mid-write
        if not self.exists():
            atomic_write(self.directory / CONFIG, config_io.to_toml(config))
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        code = {"versions": package_versions(), **git_commit()}  # what runs: package versions and git commit
        seeds = config["seed"] if isinstance(config["seed"], list) else [config["seed"]]
        meta = self.meta() or {"name": config["name"], "config_key": config_io.config_key(config), "seeds": seeds,
                               "created": now, **code, "sessions": []}
        meta["sessions"].append({"started": now, "executor": executor, "argv": sys.argv, **code})
        atomic_write(self.directory / META, json.dumps(meta, indent=2))
        self._batches(set_aside=True)
        self.sync()

    def meta(self) -> dict:
        """meta.json, or {} when it is missing or unreadable (then a warning names it)."""
        path = self.directory / META
        if not path.exists():
            return {}
        try:
            meta = json.loads(path.read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("sessions"), list):
                raise ValueError("not a JSON object with a list of sessions")
            return meta
        except (OSError, ValueError) as error:
            warnings.warn(f"{path} is unreadable ({error}); a new one is written", RuntimeWarning, stacklevel=2)
            return {}

    def _batches(self, set_aside: bool = False) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
        """(rows, features) of each readable batch, oldest first. An unreadable one is named in a warning and
        left out; with `set_aside` its rows file moves to NAME.corrupt (kept for a look), so that it runs again."""
        readable = []
        for path in sorted(self.batches.glob("*.rows.csv"), key=lambda p: (p.stat().st_mtime_ns, p.name)):
            features_path = path.with_name(path.name.replace(".rows.csv", ".features.csv"))
            broken = path
            try:
                rows = _read_table(path, ("key", "batch"))
                broken = features_path
                features = _read_table(features_path, ("key",), allow_empty=not (_status(rows) == OK).any())
            except ValueError as error:
                fate = (f"moved {path.name} aside to {path.name}.corrupt, and its configurations run again"
                        if set_aside else "its configurations are left out")
                warnings.warn(f"batch file {broken} cannot be read ({error}); {fate}", RuntimeWarning, stacklevel=3)
                if set_aside:
                    os.replace(path, path.with_name(path.name + ".corrupt"))
                continue
            readable.append((rows, features))
        return readable

    def _truth(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(every configuration's row once, their features), from the batch files."""
        batches = self._batches()
        rows = best_rows([rows for rows, _ in batches])
        if rows.empty:
            return rows, pd.DataFrame()
        chosen = set(zip(rows["key"], rows["batch"]))
        features = []
        for batch_rows, table in batches:
            if not table.empty:
                batch = batch_rows["batch"].iloc[0] if len(batch_rows) else None
                features.append(table[[(key, batch) in chosen for key in table["key"]]])
        if not features:
            return rows, pd.DataFrame()
        return rows, pd.concat(features, ignore_index=True).drop_duplicates(["key", "feature"], ignore_index=True)

    def results(self) -> pd.DataFrame:
        """Every configuration's row once (`best_rows`), from the batch files."""
        return self._truth()[0]

    def features(self) -> pd.DataFrame:
        return self._truth()[1]

    def done_keys(self) -> set[str]:
        """Keys of every configuration with a finished row (failed ones run again)."""
        rows = self.results()
        return set(rows["key"][_status(rows) == OK]) if not rows.empty else set()

    def commit(self, result) -> None:
        """Store one finished batch (a runner.BatchResult): its files first, then its rows, then the merged tables."""
        batch = result.batch_id
        if result.sae is not None:
            result.sae.save(self.directory / "models" / batch / "sae")
            if result.toy_model is not None:
                result.toy_model.save(self.directory / "models" / batch / "toy_model")
            ok = result.rows[_status(result.rows) == OK]
            toys = ok["toy_instance"] if "toy_instance" in ok else [None] * len(ok)
            atomic_write(self.directory / "models" / batch / "instances.json", json.dumps(
                [{"key": key, "sae_instance": int(i), "toy_instance": None if t is None else int(t)}
                 for key, i, t in zip(ok["key"], ok["instance"], toys)], indent=2))
        stem, tries = batch, 1
        while (self.batches / f"{stem}.rows.csv").exists():  # a retry of the same batch keeps the earlier try's file
            tries += 1
            stem = f"{batch}.{tries}"
        info = json.dumps({"batch": batch, "seconds": result.seconds, "instances": len(result.rows),
                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        written = []
        try:  # the rows file last: from then on the batch is done
            for suffix, data in ((".features.csv", result.features.to_csv(index=False)), (".json", info),
                                 (".rows.csv", result.rows.to_csv(index=False))):
                atomic_write(self.batches / f"{stem}{suffix}", data)
                written.append(self.batches / f"{stem}{suffix}")
        except OSError:
            for path in written:  # no batch without its rows: it runs again
                path.unlink(missing_ok=True)
            raise
        self._append(result.rows, result.features)

    def _append(self, rows: pd.DataFrame, features: pd.DataFrame) -> None:
        """Merge a batch's rows into results.csv and features.csv (a failed row gives way to a newer one; a
        finished row stays); an unreadable results.csv or features.csv is rebuilt from the batch files."""
        try:
            old = _read_table(self.results_path, ("key",), missing_ok=True)
            old_features = _read_table(self.features_path, ("key",), missing_ok=True)
        except ValueError:
            self.sync()
            return
        merged = best_rows([old, rows])
        if merged.equals(old):
            return
        taken = set(merged["key"]) - (set(old["key"][_status(old) == OK]) if not old.empty else set())
        kept = old_features[~old_features["key"].isin(taken)] if not old_features.empty else old_features
        added = features[features["key"].isin(taken)] if not features.empty else features
        atomic_write(self.features_path, pd.concat([kept, added], ignore_index=True).to_csv(index=False))
        atomic_write(self.results_path, merged.to_csv(index=False))

    def sync(self) -> list[str]:
        """Rewrite results.csv and features.csv from the batch files where they are missing, unreadable or behind,
        but only where that loses no row: a table holding rows that no readable batch file has is left as it is.
        Returns what it did or left (one line each), for the caller to say."""
        rows, features = self._truth()
        notes = []
        for path, table, columns in ((self.features_path, features, ["key", "feature"]),
                                     (self.results_path, rows, ["key"])):
            try:
                current = _read_table(path, ("key",), missing_ok=True)
            except ValueError:
                current = pd.DataFrame()
            if not current.empty:
                lost = ~_ids(current, columns).isin(set(_ids(table, columns)) if not table.empty else set())
                if lost.any():
                    batches = sorted(set(current["batch"][lost].astype(str))) if "batch" in current else []
                    notes.append(f"{path.name} holds {int(lost.sum())} row(s) that no readable batch file has"
                                 + (f" (batches {', '.join(batches)})" if batches else "") + ": it is left as it "
                                 "is, and `toysuper run` retrains them")
                    continue
                if _same_rows(current, table, columns):
                    edited = _edited(current, table, columns)
                    if edited:
                        notes.append(f"{path.name} differs from the batch files in {edited} (edited by hand?): "
                                     f"the figures and summary come from the batch files; delete {path.name} to "
                                     f"rebuild it")
                    continue
            if not table.empty:
                atomic_write(path, table.to_csv(index=False))
                notes.append(f"rebuilt {path.name} from the batch files")
        return notes


def _ids(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    return table[columns].astype(str).agg("/".join, axis=1)


def _same_rows(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> bool:
    """Whether two tables (`a` not empty) hold the same rows (by `columns`, with the same status)."""
    return len(a) == len(b) and set(a.columns) == set(b.columns) and (
        sorted(zip(_ids(a, columns), _status(a))) == sorted(zip(_ids(b, columns), _status(b))))


def _edited(current: pd.DataFrame, rebuilt: pd.DataFrame, columns: list[str]) -> str:
    """'N row(s) (columns a, b)' where two tables with the same rows differ in value beyond float32 rounding
    (a table merged from float32 columns carries their float64 widening), else ''."""
    a = current.sort_values(columns).reset_index(drop=True)
    b = rebuilt.sort_values(columns).reset_index(drop=True)[list(a.columns)]
    differs = pd.DataFrame({c: ~np.isclose(a[c], b[c], rtol=1e-6, atol=0, equal_nan=True)
                            if pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])
                            else a[c].astype(str) != b[c].astype(str) for c in a.columns})
    if not differs.to_numpy().any():
        return ""
    return f"{int(differs.any(axis=1).sum())} row(s) (columns {', '.join(differs.columns[differs.any()])})"


def _status(rows: pd.DataFrame) -> pd.Series:
    """Each row's status; rows written before failures were recorded have none and finished."""
    if "status" not in rows:
        return pd.Series(OK, index=rows.index)
    return rows["status"].astype(object).where(rows["status"].notna(), OK)


def best_rows(tables: list[pd.DataFrame]) -> pd.DataFrame:
    """One row per key from tables given oldest first: its first finished row, else its latest failed row.

    A finished configuration is never replaced (a rerun that raced it changes nothing); a failed
    one gives way to any later try.
    """
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame()
    rows = pd.concat(tables, ignore_index=True)
    order = pd.Series(range(len(rows)), index=rows.index)
    preference = order.where(_status(rows) == OK, 2 * len(rows) - order)  # finished rows first, oldest first
    rows = rows.assign(_preference=preference).sort_values("_preference").drop_duplicates("key")
    rows = rows.sort_index().drop(columns="_preference").reset_index(drop=True)
    for column in {c for t in tables for c in t.columns if pd.api.types.is_integer_dtype(t[c])}:
        values = rows[column]  # made float by a failed row's gap that a retry has since filled: ints again
        if values.dtype.kind == "f" and values.notna().all() and (values == values.round()).all():
            rows[column] = values.astype("int64")
    return rows


def _read_table(path: Path, required: tuple[str, ...], missing_ok: bool = False,
                allow_empty: bool = False) -> pd.DataFrame:
    """A CSV of the run folder; ValueError saying what is wrong when it cannot be read or lacks `required`."""
    if not path.exists():
        if missing_ok:
            return pd.DataFrame()
        raise ValueError("the file is missing")
    try:
        table = pd.read_csv(path, dtype={"key": str, "batch": str})
    except pd.errors.EmptyDataError:
        if missing_ok or allow_empty:
            return pd.DataFrame()
        raise ValueError("the file is empty") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise ValueError(f"not a readable CSV: {str(error).strip()}") from error
    if table.empty and allow_empty:
        return table
    missing = [c for c in required if c not in table]
    if missing:
        raise ValueError(f"it has no {', '.join(repr(c) for c in missing)} column (columns: {list(table.columns)[:8]})")
    if table["key"].isna().any():
        raise ValueError(f"row {int(table['key'].isna().to_numpy().argmax()) + 2} has no key")
    return table

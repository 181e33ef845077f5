"""Running an experiment: config -> planned batches -> results store -> figures.

    results, run_dir = run(config_io.load("experiments/quickstart.toml"))

The grid is packed into instance batches (`planner`), each batch trains and is graded in
one pass (`runner`), in this process or on Ray (`executors`), and is committed to the run
folder as it finishes (`store`). Running the same config into the same folder again
resumes: finished configurations are skipped, never repeated.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import config as config_io
from ..devices import resolve_device
from .executors import make_executor
from .batch import Batch
from .planner import describe, plan
from ..progress import progress_bar
from .store import OK, RunStore
from ..threads import torch_threads

__all__ = ["Batch", "default_run_dir", "describe", "dry_run", "finished", "order_rows", "plan", "run"]


def default_run_dir(config: dict) -> Path:
    """runs/NAME-KEY: the same experiment always lands in the same folder, so a rerun resumes it."""
    return Path("runs") / f"{config['name']}-{config_io.config_key(config)}"


def order_rows(results: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Rows in grid order (config.expand), whatever order their batches finished in."""
    if results.empty:
        return results
    order = {config_io.point_key(p): i for i, p in enumerate(config_io.expand(config))}
    rank = results["key"].map(order).fillna(len(order))
    return results.assign(_rank=rank).sort_values(["_rank", "key"]).drop(columns="_rank").reset_index(drop=True)


def dry_run(config: dict, out_dir=None, device=None) -> str:
    """The plan as text, counting what `out_dir` (default: the config's run folder) already holds."""
    store = RunStore(out_dir if out_dir is not None else default_run_dir(config))
    store.check_folder()
    done = set()
    if store.exists():
        store.check_config(config)
        done = store.done_keys()
    batches = plan(config, done, device=device)
    return describe(config, batches, n_done=len(done)) + f"\nrun folder: {store.directory}"


def run(config: dict, out_dir=None, device=None, quiet: bool = False, executor: str | None = None,
        figures: bool = True) -> tuple[pd.DataFrame, Path]:
    """Run every configuration of a resolved `config` not yet finished in `out_dir` (default runs/NAME-KEY; an
    existing one is resumed); return all its rows and the folder. `device` and `executor` default to the config's.

    A configuration that failed (say its loss became NaN) has status "failed" and the reason in `error`, its
    batch-mates keep their results, and running again retries it. A config that cannot run raises ValueError
    (naming the key) before anything trains.
    """
    device_spec = device if device is not None else config["device"]
    chosen = make_executor(config, executor)
    store = RunStore(out_dir if out_dir is not None else default_run_dir(config))
    plan(config, device=device_spec)  # validate the whole grid (and the device) before touching the folder
    target = resolve_device(device_spec) if chosen.name == "local" else device_spec
    store.open(config, executor=chosen.name)
    batches = plan(config, store.done_keys(), device=device_spec)
    keep = bool(config["run"]["save_models"])
    with (progress_bar(None, desc="batches", quiet=quiet, total=len(batches), unit="batch", position=0) as bar,
          torch_threads(config["run"]["threads"])):  # 0: torch's own setting
        for result in chosen.run(batches, target, quiet=quiet, keep_models=keep):
            store.commit(result)
            bar.update(1)
    store.sync()
    results = order_rows(store.results(), config)
    if figures and not finished(results).empty:
        from .plots import draw_figures  # matplotlib only once there is something to draw

        draw_figures(store.directory, results=finished(results), features=store.features(), config=config)
    return results, store.directory


def finished(results: pd.DataFrame) -> pd.DataFrame:
    if results.empty or "status" not in results:
        return results
    return results[results["status"].isna() | (results["status"] == OK)].reset_index(drop=True)

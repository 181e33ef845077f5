"""Where instance batches run: in this process (the default) or as Ray tasks across a cluster.

An executor takes the planned batches and yields each `BatchResult` as it finishes; the
caller stores it. Ray is imported only by `RayExecutor`, so the default path needs no Ray.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from ..devices import resolve_device
from ..sae.recipes import get_recipe, recipe_path
from .batch import Batch
from .config import EXECUTORS
from .runner import BatchResult, run_batch


class LocalExecutor:
    """Run the batches one after another in this process."""

    name = "local"

    def run(self, batches: list[Batch], device, quiet: bool = False,
            keep_models: bool = False) -> Iterator[BatchResult]:
        for batch in batches:
            yield run_batch(batch, device, quiet=quiet, keep_models=keep_models)


def _ray_task(batch: Batch, device: str, keep_models: bool, threads: int, recipes: list[str],
              paths: list[str]) -> BatchResult:
    """One batch inside a Ray worker: 'auto' picks the GPU Ray gave the task, if any. The outside `recipes` it
    trains are imported (so registered) from the driver's Python `paths`, so that a recipe registered by name
    works in a worker too."""
    sys.path.extend(path for path in paths if path not in sys.path)
    for recipe in recipes:
        get_recipe(recipe)
    torch.set_num_threads(threads)  # as many as the CPUs the task claimed
    return run_batch(batch, resolve_device(device), quiet=True, keep_models=keep_models)


def _outside_recipes(batch: Batch) -> list[str]:
    """The import paths of the outside recipes `batch` trains (a built-in is found by its name anywhere)."""
    return sorted({path for path in (recipe_path(get_recipe(p["sae.recipe"])) for p in batch.points) if ":" in path})


class RayExecutor:
    """Run each batch as a Ray task claiming `cpus_per_batch` CPUs (its torch threads) and, on a cluster with GPUs,
    `gpus_per_batch` GPUs (fractions share one). `address` goes to `ray.init` when Ray is not initialised yet
    ("" starts a local instance, "auto" joins a cluster); an instance this executor started is shut down when
    the run ends, one the caller started is left running."""

    name = "ray"

    def __init__(self, address: str = "", gpus_per_batch: float = 1.0, cpus_per_batch: float = 1.0):
        self.address = address
        self.gpus_per_batch = gpus_per_batch
        self.cpus_per_batch = cpus_per_batch

    def run(self, batches: list[Batch], device, quiet: bool = False,
            keep_models: bool = False) -> Iterator[BatchResult]:
        try:
            import ray
        except ImportError as error:
            raise ValueError("run.executor = \"ray\" needs Ray: pip install \"toysuper[ray]\"") from error
        if not batches:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address or None, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        try:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            device = "auto" if device is None else str(device)
            if device.startswith("cuda") and not has_gpus:
                raise ValueError(f"device={device!r} was asked for, but the Ray cluster has no GPUs")
            task = ray.remote(_ray_task).options(num_cpus=self.cpus_per_batch,
                                                 num_gpus=self.gpus_per_batch if has_gpus else 0,
                                                 max_retries=0)
            threads = max(1, int(self.cpus_per_batch))
            pending = [task.remote(batch, device, keep_models, threads, _outside_recipes(batch), sys.path)
                       for batch in batches]
            try:
                while pending:
                    finished, pending = ray.wait(pending, num_returns=1)
                    yield ray.get(finished[0])
            finally:
                for ref in pending:  # interrupted or failed: stop the rest
                    ray.cancel(ref, force=True)
        finally:
            if started:
                ray.shutdown()


def make_executor(config: dict, name: str | None = None):
    """The executor a config asks for (`name` overrides run.executor)."""
    run = config.get("run", {})
    name = name or run.get("executor", "local")
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(run.get("ray_address", ""), run.get("gpus_per_batch", 1.0), run.get("cpus_per_batch", 1.0))
    raise ValueError(f"run.executor must be one of {list(EXECUTORS)}, got {name!r}")

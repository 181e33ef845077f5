"""How many bytes a configuration needs, and whether the device can give them.

Every estimate is a pure function of the sizes (float32, 4 bytes a number), so the constructors
can refuse a configuration before anything is allocated, rather than let the allocator fail
halfway or the kernel kill the process. The sweep planner estimates a whole batched pass with
sweep/planner.estimate_mb and asks `available_bytes` what the device can give. The estimates count the large tensors
and round up: they are meant to separate "fits" from "cannot fit", not to budget to the byte.
"""

from __future__ import annotations

from pathlib import Path

import torch

FLOAT = 4  # bytes of a float32


class TooLarge(ValueError):
    """A configuration needs more memory than its device can give (a ValueError naming the sizes)."""


def distribution_bytes(n_features: int, n_instances: int = 1) -> int:
    """Peak bytes of building a `FeatureDistribution`: 40 float32 per (instance, feature).

    Its firing, importance and magnitude tables, the Poisson tables and their temporaries (about
    36 per (instance, feature) measured on CPU, whatever the firing law).
    """
    return 40 * FLOAT * n_instances * n_features


def toy_model_bytes(n_features: int, d_hidden: int, n_instances: int = 1) -> int:
    """Bytes of a `ToyModel`'s weights: W (inst, n_features, d_hidden) and b (inst, n_features)."""
    return FLOAT * n_instances * n_features * (d_hidden + 1)


def sae_bytes(d_hidden: int, d_sae: int, n_instances: int = 1) -> int:
    """Bytes of an `SAE`'s weights: W_enc and W_dec (inst, d_hidden, d_sae) each, plus at most 4 numbers per
    latent (b_enc, a recipe's threshold or gate, the dead-latent counter) and b_dec."""
    return FLOAT * n_instances * (2 * d_hidden * d_sae + 4 * d_sae + d_hidden)


def available_bytes(device: torch.device) -> int | None:
    """Bytes `device` can still give: on CUDA, free memory plus what torch holds but does not use; on CPU,
    MemAvailable (or psutil's) capped by the cgroup's limit; None where unknown (MPS, another OS)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:
        meminfo = Path("/proc/meminfo")
        if not meminfo.exists():
            return None
        lines = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        available = int(lines["MemAvailable"].split()[0]) * 1024
    return min(available, _cgroup_room())


def _cgroup_room() -> int | float:
    """What the cgroup (a container's memory limit) still allows: limit - usage, v2 or v1; inf without a limit."""
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            text = Path("/sys/fs/cgroup", limit).read_text().strip()
            if text != "max" and int(text) < 2**60:
                return int(text) - int(Path("/sys/fs/cgroup", usage).read_text())
        except (OSError, ValueError):
            continue
    return float("inf")


def check_fits(what: str, needed: int, device: torch.device) -> None:
    """Raise `TooLarge` naming `what` (the parameters and their values) when `needed` bytes exceed what
    `device` can give; do nothing where that is unknown."""
    available = available_bytes(device)
    if available is not None and needed > available:
        raise TooLarge(f"{what} needs about {_size(needed)} on {device}, but {device} can give about "
                       f"{_size(available)} now; make it smaller")


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:,.1f} MiB"


"""Where tensors live: one rule for the whole package.

`device=None` (or "auto") means CUDA when present, else CPU.
"""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Turn a user's `device=` argument into a `torch.device`.

    None or "auto" picks CUDA when it is available, else CPU.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device torch knows (try 'cpu' or 'cuda')") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for, but CUDA is not available on this machine")
    return resolved


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A `torch.Generator` on `device`, seeded with `seed` (a fresh random seed when None)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return generator


def instance_seeds(seed, n_instances: int) -> list[int]:
    """One seed per instance: an int s gives s, s+1, …; a list gives itself; None draws fresh ones."""
    if seed is None:
        seed = int(torch.Generator().seed()) % 2**62
    if isinstance(seed, (list, tuple)):
        if len(seed) != n_instances or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed):
            raise ValueError(f"seed must be an int, None or {n_instances} ints (one per instance), got {seed!r}")
        return list(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, None or a list of ints, got {seed!r}")
    return [seed + i for i in range(n_instances)]


def instance_generators(seeds, device, n_instances: int | None = None) -> list[torch.Generator]:
    """One generator per instance on `device`, seeded by `instance_seeds(seeds, n_instances)`."""
    if n_instances is None:
        if not isinstance(seeds, (list, tuple)):
            raise TypeError(f"seeds must be a list of ints when n_instances is not given, got {seeds!r}")
        n_instances = len(seeds)
    seeds = instance_seeds(seeds, n_instances)
    return [make_generator(s, device) for s in seeds]

"""Where tensors live: one rule for the whole package.

`device=None` (or "auto") means CUDA when present, else CPU.
"""

from __future__ import annotations

import torch

from .streams import Streams


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A user's `device=` as a `torch.device` this machine can use; a device torch names but this machine cannot
    use ("meta", "cuda" without CUDA, "cuda:3" with two GPUs) is a ValueError, before anything is allocated."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device name; usable here: {usable_devices()}") from error
    if resolved.type == "cpu" or (resolved.type == "mps" and torch.backends.mps.is_available()):
        return resolved
    if resolved.type == "cuda" and torch.cuda.is_available() and (resolved.index or 0) < torch.cuda.device_count():
        return resolved
    why = {"cuda": "CUDA is not available on this machine" if not torch.cuda.is_available()
           else f"this machine has {torch.cuda.device_count()} CUDA device(s)",
           "mps": "MPS is not available on this machine"}.get(resolved.type, "toysuper does not compute there")
    raise ValueError(f"device={device!r} cannot be used: {why}; usable here: {usable_devices()}")


def usable_devices() -> list[str]:
    """The device names this machine can compute on: "cpu", then each GPU's."""
    cuda = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *(["cuda"] if cuda else []), *cuda, *(["mps"] if torch.backends.mps.is_available() else [])]


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A `torch.Generator` on `device`, seeded with `seed` (a fresh random seed when None)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(check_seed(seed))
    return generator


def check_seed(seed, name: str = "seed") -> int:
    """`seed` as an int in [0, 2**63), else a ValueError/TypeError naming `name` (booleans are not seeds)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        if isinstance(seed, float) and seed.is_integer():
            seed = int(seed)
        else:
            raise TypeError(f"{name} must be a whole number >= 0, got {seed!r}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be a whole number in [0, 2**63), got {seed!r}")
    return seed


def instance_seeds(seed, n_instances: int) -> list[int]:
    """One seed per instance: an int s gives s, s+1, …; a list gives itself; None draws fresh ones."""
    if seed is None:
        seed = int(torch.Generator().seed()) % 2**62
    if isinstance(seed, (list, tuple)):
        if len(seed) != n_instances or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed):
            raise ValueError(f"seed must be an int, None or {n_instances} ints (one per instance), got {seed!r}")
        return [check_seed(s) for s in seed]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, None or a list of ints, got {seed!r}")
    return [check_seed(seed + i) for i in range(n_instances)]


def instance_generators(seeds, device=None, n_instances: int | None = None) -> Streams:
    """One random stream per instance (`toysuper.streams.Streams`), which every `sample(n, generator)` takes.

    `seeds`: one int per instance, an int s (instance i gets s + i) or None for fresh random seeds (with an int
    or None, `n_instances` says how many).
    """
    listed = isinstance(seeds, (list, tuple))
    if isinstance(seeds, bool) or not (seeds is None or listed or isinstance(seeds, int)) or (
            listed and not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise TypeError(f"seeds must be an int or a list of ints, got {seeds!r}")
    if not listed and n_instances is None:
        raise ValueError(f"seeds={seeds!r} is not a list: pass n_instances= to say how many streams to make")
    seeds = instance_seeds(seeds, len(seeds) if n_instances is None else n_instances)
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    return Streams(torch.tensor(seeds, dtype=torch.int64, device=device))


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


def instance_generators(seeds, device=None, n_instances: int | None = None) -> list[torch.Generator]:
    """One seeded `torch.Generator` per instance, on `device`.

    seeds: a list of ints (one per instance), or an int s with `n_instances` (instance i gets s + i).
    Pass the list as `generator=` to a draw: instance i's numbers then come from generator i alone,
    so its results do not depend on which other instances share the batch.
    """
    device = resolve_device(device)
    if isinstance(seeds, bool):
        raise TypeError(f"seeds must be an int or a list of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if n_instances is None:
            raise ValueError(f"seeds={seeds!r} is one int: pass n_instances= to say how many generators to make")
        from .checks import positive_int

        seeds = [seeds + i for i in range(positive_int("n_instances", n_instances))]
    if not isinstance(seeds, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise TypeError(f"seeds must be an int or a list of ints, got {seeds!r}")
    if not seeds:
        raise ValueError(f"seeds must name at least one seed, got {seeds!r}")
    return [make_generator(s, device) for s in seeds]


def per_instance_generators(generator, n_instances: int, device: torch.device):
    """`generator` as given (None or one Generator), or checked as a list of n_instances Generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    try:
        generators = list(generator)
    except TypeError as error:
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {generator!r}") from error
    if len(generators) != n_instances or not all(isinstance(g, torch.Generator) for g in generators):
        raise ValueError(f"generator: a list must hold one torch.Generator per instance ({n_instances}), got "
                         f"{generator!r}")
    if any(g.device.type != device.type for g in generators):
        raise ValueError(f"generator: every generator must be on {device.type}, got "
                         f"{sorted({g.device.type for g in generators})}")
    return generators


def per_instance_normals(shape: tuple[int, ...], generator, n_instances: int, device: torch.device) -> torch.Tensor:
    """Standard normals (inst, *shape): from one generator, or instance i's from generator i of a list."""
    generators = per_instance_generators(generator, n_instances, device)
    if isinstance(generators, list):
        return torch.stack([torch.randn(shape, generator=g, device=device) for g in generators])
    return torch.randn((n_instances, *shape), generator=generators, device=device)

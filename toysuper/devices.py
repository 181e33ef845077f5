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

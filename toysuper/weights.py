"""Saved models: `weights.safetensors` plus a `config.json` of what the constructor needs (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


def save(directory, module: torch.nn.Module, config: dict) -> Path:
    """Write the module's state dict and `config` into `directory` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().contiguous().cpu() for name, t in module.state_dict().items()},
              str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory


def read(directory, what: str, required: tuple[str, ...]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) written by `save`; a missing or corrupt file, a config that is not a JSON object or
    lacks a `required` key, or a NaN/infinite weight raises ValueError naming the folder."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        tensors = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, ValueError, SafetensorError) as error:  # missing file, bad JSON, corrupt weights
        raise ValueError(f"cannot load {what} from {str(directory)!r}: {error}") from error
    if not isinstance(config, dict):
        raise ValueError(f"cannot load {what} from {str(directory)!r}: {CONFIG_FILE} is not a JSON object")
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"{CONFIG_FILE} in {str(directory)!r} has no {', '.join(repr(k) for k in missing)} "
                         f"({what}'s config names its {', '.join(required)})")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"weights in {str(directory)!r}: {name} contains "
                             f"{int((~torch.isfinite(tensor)).sum())} NaN or infinite value(s)")
    return config, tensors


def load_state(module: torch.nn.Module, tensors: dict, directory) -> None:
    """module.load_state_dict(tensors), or a ValueError saying the weights do not fit the config."""
    try:
        module.load_state_dict(tensors)
    except RuntimeError as error:
        raise ValueError(f"weights in {str(directory)!r} do not fit its {CONFIG_FILE}: {error}") from error

"""Experiment configs: TOML files whose list values are sweep axes.

A config has the sections of `DEFAULTS`; any key it leaves out takes the default, and a
key that `DEFAULTS` does not name is an error. A list value is a sweep axis: the grid is
the cartesian product of every axis.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULTS: dict = {
    "name": "experiment",
    "seed": 0,
    "device": "auto",
    "features": {
        "n_features": 20,
        "sparsity": 0.9,            # S = 1 - firing probability, same for every feature
        "importance_decay": 1.0,    # importance of feature i is decay**i (1: all equal)
    },
    "source": {
        "kind": "toy_model",        # "toy_model" (a trained ToyModel) or "dictionary" (random unit directions)
        "d_hidden": 5,
        "toy_model": "relu_output", # kind of toy model: linear, relu_output, hidden_relu
        "steps": 5_000,             # toy-model training
        "batch_size": 1024,
        "lr": 1e-3,
        "noise": 0.0,               # dictionary source: std of Gaussian noise in hidden space
    },
    "sae": {
        "recipe": "anthropic_2024",
        "d_sae": 40,
        "l1_coefficient": 0.3,
        "steps": 3_000,
        "batch_size": 1024,
        "lr": 1e-3,
    },
    "evaluate": {
        "n_samples": 20_000,
        "threshold": 0.9,
    },
}

# Axes that vary within one batched pass (they do not change any tensor's shape).
INSTANCE_AXES = ("features.sparsity", "sae.l1_coefficient")


def flatten(config: dict, prefix: str = "") -> dict:
    """{"sae": {"d_sae": 40}} -> {"sae.d_sae": 40}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: dict) -> dict:
    """{"sae.d_sae": 40} -> {"sae": {"d_sae": 40}}."""
    nested: dict = {}
    for dotted, value in flat.items():
        *sections, key = dotted.split(".")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[key] = value
    return nested


def parse_override(text: str) -> tuple[str, object]:
    """"sae.l1_coefficient=[0.1, 0.3]" -> ("sae.l1_coefficient", [0.1, 0.3]); values are TOML."""
    if "=" not in text:
        raise ValueError(f"--set takes key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as relu_output is a string
    return key, value


def resolve(user: dict, overrides: list[str] = ()) -> dict:
    """Defaults, then the user's config, then --set overrides; unknown keys raise ValueError."""
    known = flatten(DEFAULTS)
    flat = dict(known)
    given = flatten(user)
    for text in overrides:
        key, value = parse_override(text)
        given[key] = value
    for key, value in given.items():
        if key not in known:
            section = key.split(".")[0]
            near = sorted(k for k in known if k.startswith(section + ".")) or sorted(known)
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(near)}")
        if isinstance(value, list) and not value:
            raise ValueError(f"config key {key!r} is an empty list: a sweep axis needs at least one value")
        flat[key] = value
    return unflatten(flat)


def load(path, overrides: list[str] = ()) -> dict:
    """Read a TOML experiment file and resolve it against the defaults."""
    path = Path(path)
    try:
        user = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ValueError(f"config file {str(path)!r} does not exist") from error
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from error
    return resolve(user, overrides)


def axes(config: dict) -> dict[str, list]:
    """The sweep axes: every key whose value is a list."""
    return {key: value for key, value in flatten(config).items() if isinstance(value, list)}


def expand(config: dict) -> list[dict]:
    """Every grid point as a flat dict of scalars, in a stable order."""
    flat = flatten(config)
    sweep = axes(config)
    points = []
    for values in itertools.product(*sweep.values()):
        point = dict(flat)
        point.update(zip(sweep, values))
        points.append(point)
    return points


def to_toml(config: dict) -> str:
    """Write a resolved config (tables of scalars and lists of scalars) back as TOML."""
    def literal(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(literal(v) for v in value) + "]"
        return repr(value)

    top = [f"{key} = {literal(value)}" for key, value in config.items() if not isinstance(value, dict)]
    tables = [f"\n[{key}]\n" + "\n".join(f"{k} = {literal(v)}" for k, v in value.items())
              for key, value in config.items() if isinstance(value, dict)]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"


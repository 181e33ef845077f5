"""Experiment configs: TOML files whose list values are sweep axes.

A config has the sections of `SCHEMA` (`DEFAULTS` is its nested form). A key the config
leaves out takes its default; optional keys (default None) stay absent unless given; a key
the schema does not name is an error that names it. A list value is a sweep axis and the
grid is the product of every axis.

The [sae] section also takes every per-instance hyperparameter of the recipe(s) it names
(`toysuper.RECIPES[name].hyperparameters`), either for all of them (`sae.k = [4, 8]`) or for
one recipe only (a subtable, `[sae.topk] k = [4, 8]`). A hyperparameter is an axis only for
the recipes that take it, so sweeping `recipe = ["relu_l1", "topk"]` with both
`l1_coefficient` and `k` gives each recipe its own grid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Key:
    """One config key: its default (None: optional, absent unless given) and what it means."""

    default: object
    help: str
    instance: bool = False
    """True when the key may vary between the instances of one batched pass (it changes no shape)."""


SCHEMA: dict[str, Key] = {
    "name": Key("experiment", "name of the experiment (the run folder is runs/NAME-HASH)"),
    "description": Key("", "the question the experiment answers"),
    "seed": Key(0, "replicate seed; a list gives independent replicates trained side by side", instance=True),
    "device": Key("auto", "cpu, cuda or auto (CUDA when present)"),
    # ground truth
    "features.n_features": Key(20, "number of planted features"),
    "features.sparsity": Key(0.9, "S = 1 - mean firing probability (give sparsity or l0)", instance=True),
    "features.l0": Key(None, "mean number of features firing per sample (instead of sparsity)", instance=True),
    "features.frequency": Key("constant", "firing-probability law across features: constant or zipf"),
    "features.zipf_exponent": Key(None, "zipf law: p_i proportional to (i+1)^-exponent (default 1)", instance=True),
    "features.importance_decay": Key(1.0, "importance of feature i is decay**i (1: all equal)", instance=True),
    "features.magnitude": Key(None, "value of a firing feature: uniform (U[0,1], default), constant, exponential, "
                                    "folded_normal; parameters in a [features.magnitude_params] table"),
    "features.correlated_groups": Key(None, "groups of consecutive features (from feature 0) that fire together"),
    "features.correlated_group_size": Key(None, "features per correlated group (default 2)"),
    "features.correlation": Key(None, "correlation of a correlated group's members' firing (default 0.5)"),
    "features.exclusive_groups": Key(None, "groups of consecutive features (after the correlated ones) of which "
                                           "at most one fires"),
    "features.exclusive_group_size": Key(None, "features per exclusive group (default 2)"),
    "features.hierarchy_parents": Key(None, "parents of a hierarchy, after the groups; their children follow them"),
    "features.hierarchy_children": Key(None, "children per parent, each firing only with its parent (default 2)"),
    "features.child_prob": Key(None, "P(child fires | parent fires) (default 0.5)"),
    "features.exclusive_children": Key(None, "at most one child of a parent fires (default false)"),
    # where the hidden activations come from
    "source.kind": Key("toy_model", "toy_model (a trained toy model) or dictionary (fixed random unit directions)"),
    "source.d_hidden": Key(5, "hidden width"),
    "source.toy_model": Key("relu_output", "toy-model kind: linear, relu_output, hidden_relu"),
    "source.steps": Key(5_000, "toy-model training steps"),
    "source.batch_size": Key(1024, "toy-model batch size"),
    "source.lr": Key(1e-3, "toy-model learning rate (AdamW)"),
    "source.noise": Key(0.0, "dictionary source: std of Gaussian noise added in hidden space"),
    "source.snr": Key(None, "signal-to-noise power ratio of Gaussian noise added to the hidden activations "
                            "(either source kind; instead of noise)"),
    "source.dictionary": Key(None, "dictionary source: random (default) or low_coherence directions"),
    "source.world": Key(None, "dictionary source: a preset world instead of [features] and the dictionary: "
                              "synthsaebench_16k or synthsaebench_4k (toysuper.worlds)"),
    # the SAE (its recipe's hyperparameters are added dynamically, see sae_keys)
    "sae.recipe": Key("anthropic_2024", "SAE recipe (toysuper list shows them)"),
    "sae.d_sae": Key(40, "number of SAE latents"),
    "sae.steps": Key(3_000, "SAE training steps"),
    "sae.batch_size": Key(1024, "SAE batch size"),
    "sae.lr": Key(None, "SAE learning rate (default: the recipe's)"),
    # grading
    "evaluate.n_samples": Key(20_000, "held-out samples for activation-level scores"),
    "evaluate.threshold": Key(0.9, "tau of recovered@tau"),
    # how to run (not part of a configuration's identity)
    "run.memory_mb": Key(1024, "memory budget of one batched pass, MB (the planner packs instances up to it)"),
    "run.max_instances": Key(32, "at most this many SAE instances in one batched pass (0: no limit)"),
    "run.threads": Key(1, "torch CPU threads of an in-process run (0: torch's default); small models run fastest "
                          "on one, and more threads than free cores slow everything down"),
    "run.save_models": Key(False, "save every trained SAE and toy model (safetensors + JSON) in the run folder"),
    "run.executor": Key("local", "local (in this process) or ray (instance batches as Ray tasks)"),
    "run.ray_address": Key("", "Ray cluster address ('' starts or joins a local instance, 'auto' joins one)"),
    "run.gpus_per_batch": Key(1.0, "GPUs a Ray task claims when the cluster has GPUs"),
    "run.cpus_per_batch": Key(1.0, "CPUs a Ray task claims"),
}

# Keys that do not change what a configuration computes: left out of its identity.
NON_IDENTITY = ("name", "description", "device")
NON_IDENTITY_SECTIONS = ("run",)


def _recipes() -> dict:
    from ..sae import RECIPES  # torch is only imported once a config is resolved

    return RECIPES


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


DEFAULTS: dict = unflatten({key: spec.default for key, spec in SCHEMA.items() if spec.default is not None})


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


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


MAGNITUDE_PARAMS = "features.magnitude_params."


def _check_magnitude_keys(flat: dict) -> None:
    """Every features.magnitude_params.<name> must be a parameter of each swept magnitude law."""
    import inspect

    from ..truth.magnitudes import MAGNITUDES

    laws = _as_list(flat.get("features.magnitude", "uniform"))
    for law in laws:
        if law not in MAGNITUDES:
            raise ValueError(f"features.magnitude must be one of {sorted(MAGNITUDES)}, got {law!r}")
    for key in flat:
        if key.startswith(MAGNITUDE_PARAMS):
            name = key[len(MAGNITUDE_PARAMS):]
            for law in laws:
                accepted = list(inspect.signature(MAGNITUDES[law]).parameters)
                if name not in accepted:
                    raise ValueError(f"unknown config key {key!r}: magnitude law {law!r} takes {accepted}")


def _check_recipe_keys(flat: dict) -> None:
    """Every sae.<hp> must belong to a swept recipe; every sae.<recipe>.<hp> to that recipe."""
    registry = _recipes()
    recipes = _as_list(flat["sae.recipe"])
    for recipe in recipes:
        if not isinstance(recipe, str) or recipe not in registry:
            raise ValueError(f"sae.recipe must be one of {sorted(registry)}, got {recipe!r}")
    for key in flat:
        parts = key.split(".")
        if parts[0] != "sae" or key in SCHEMA:
            continue
        if len(parts) == 2:
            takers = [r for r in recipes if parts[1] in registry[r].hyperparameters]
            if not takers:
                offered = {r: sorted(registry[r].hyperparameters) for r in recipes}
                raise ValueError(f"unknown config key {key!r}: no recipe in sae.recipe={flat['sae.recipe']!r} "
                                 f"has a hyperparameter {parts[1]!r}; they take {offered} and the [sae] "
                                 f"section also takes {sorted(k for k in SCHEMA if k.startswith('sae.'))}")
        elif len(parts) == 3 and parts[1] in registry:
            if parts[1] not in recipes:
                raise ValueError(f"config key {key!r} sets recipe {parts[1]!r}, which sae.recipe={flat['sae.recipe']!r} "
                                 f"does not include")
            if parts[2] not in registry[parts[1]].hyperparameters:
                raise ValueError(f"unknown config key {key!r}: recipe {parts[1]!r} has no hyperparameter "
                                 f"{parts[2]!r}; it takes {sorted(registry[parts[1]].hyperparameters)}")
        else:
            raise ValueError(f"unknown config key {key!r}; [sae] takes {sorted(k for k in SCHEMA if k.startswith('sae.'))}, "
                             f"a recipe's hyperparameters, or a [sae.RECIPE] table of them")


def resolve(user: dict, overrides: list[str] = ()) -> dict:
    """Defaults, then the user's config, then --set overrides; unknown keys raise ValueError naming them."""
    flat = {key: spec.default for key, spec in SCHEMA.items() if spec.default is not None}
    given = flatten(user)
    for text in overrides:
        key, value = parse_override(text)
        if isinstance(value, dict):  # --set sae.topk={k=4}: a table, as flat keys
            given.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            given[key] = value
    for key, value in given.items():
        if key not in SCHEMA and not key.startswith(("sae.", MAGNITUDE_PARAMS)):
            section = key.split(".")[0]
            near = sorted(k for k in SCHEMA if k.startswith(section + ".")) or sorted(SCHEMA)
            raise ValueError(f"unknown config key {key!r}; known keys: {', '.join(near)}")
        if isinstance(value, list) and not value:
            raise ValueError(f"config key {key!r} is an empty list: a sweep axis needs at least one value")
        if isinstance(value, list) and key in SCHEMA and key.split(".")[0] in NON_IDENTITY_SECTIONS + NON_IDENTITY:
            raise ValueError(f"config key {key!r} cannot be a sweep axis (it says how to run, not what), got {value!r}")
        if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
            raise ValueError(f"config key {key!r}: a sweep axis is a list of plain values, got {value!r}")
        flat[key] = value
    if "features.l0" in given and "features.sparsity" in given:
        raise ValueError("give features.sparsity or features.l0, not both: they set the same thing "
                         f"(got sparsity={given['features.sparsity']!r}, l0={given['features.l0']!r})")
    if "features.l0" in given:
        del flat["features.sparsity"]
    _check_recipe_keys(flat)
    _check_magnitude_keys(flat)
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


def is_hyperparameter(key: str) -> bool:
    """sae.<hp> or sae.<recipe>.<hp>: a recipe hyperparameter rather than a schema key."""
    return key.startswith("sae.") and key not in SCHEMA


def is_instance_axis(key: str) -> bool:
    """Whether `key` may vary between the instances of one batched pass."""
    return is_hyperparameter(key) or (key in SCHEMA and SCHEMA[key].instance)


def is_identity(key: str) -> bool:
    """Whether `key` changes what a configuration computes (see NON_IDENTITY)."""
    return key not in NON_IDENTITY and key.split(".")[0] not in NON_IDENTITY_SECTIONS


def axes(config: dict) -> dict[str, list]:
    """The sweep axes: every key whose value is a list, recipe hyperparameters as sae.<hp>."""
    found: dict[str, list] = {}
    for key, value in flatten(config).items():
        if isinstance(value, list):
            short = f"sae.{key.split('.')[-1]}" if is_hyperparameter(key) else key
            found.setdefault(short, [])
            found[short] += [v for v in value if v not in found[short]]
    return found


def expand(config: dict) -> list[dict]:
    """Every grid point as a flat dict of scalars, in a stable order.

    Each point carries the hyperparameters of its own recipe as sae.<hp> (recipe table
    first, then the [sae] value, then the recipe's default), and none of other recipes'.
    """
    flat = flatten(config)
    plain = {k: v for k, v in flat.items() if not is_hyperparameter(k)}
    sweep = {k: v for k, v in plain.items() if isinstance(v, list)}
    registry = _recipes()
    points = []
    for values in itertools.product(*sweep.values()):
        base = dict(plain)
        base.update(zip(sweep, values))
        recipe = base["sae.recipe"]
        hyper = {}
        for name, default in registry[recipe].hyperparameters.items():
            hyper[f"sae.{name}"] = flat.get(f"sae.{recipe}.{name}", flat.get(f"sae.{name}", default))
        hyper_axes = {k: v for k, v in hyper.items() if isinstance(v, list)}
        for hyper_values in itertools.product(*hyper_axes.values()):
            point = {**base, **hyper}
            point.update(zip(hyper_axes, hyper_values))
            points.append(point)
    return points


def identity(point: dict) -> dict:
    """The keys of a grid point that decide what it computes."""
    return {k: v for k, v in point.items() if is_identity(k)}


def point_key(point: dict) -> str:
    """A stable 16-hex-digit key of what a grid point computes (its identity keys and values)."""
    canonical = json.dumps({k: _canonical(v) for k, v in sorted(identity(point).items())}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


def config_key(config: dict) -> str:
    """A stable 8-hex-digit key of what a whole config computes (its identity keys)."""
    flat = {k: v for k, v in flatten(config).items() if is_identity(k)}
    canonical = json.dumps({k: _canonical(v) for k, v in sorted(flat.items())}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def _canonical(value):
    """Numbers that compare equal hash equal (3 and 3.0 are one configuration)."""
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def identity_differences(old: dict, new: dict) -> list[str]:
    """The identity keys whose values differ between two resolved configs."""
    a = {k: _canonical(v) for k, v in flatten(old).items() if is_identity(k)}
    b = {k: _canonical(v) for k, v in flatten(new).items() if is_identity(k)}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


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

    def table(name: str, content: dict) -> list[str]:
        lines = [f"\n[{name}]"] + [f"{k} = {literal(v)}" for k, v in content.items() if not isinstance(v, dict)]
        for k, v in content.items():
            if isinstance(v, dict):
                lines += table(f"{name}.{k}", v)
        return lines

    top = [f"{key} = {literal(value)}" for key, value in config.items() if not isinstance(value, dict)]
    tables = []
    for key, value in config.items():
        if isinstance(value, dict):
            tables += table(key, value)
    return "\n".join(top + tables) + "\n"

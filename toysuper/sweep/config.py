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

import difflib
import hashlib
import itertools
import json
import re
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
    "sae.snapshots": Key(0, "grade the SAE at this many evenly spaced points of training (recovery over training; "
                            "0: none)"),
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

INTEGER_KEYS = frozenset(k for k, spec in SCHEMA.items() if type(spec.default) is int) | {
    "features.correlated_groups", "features.correlated_group_size", "features.exclusive_groups",
    "features.exclusive_group_size", "features.hierarchy_parents", "features.hierarchy_children"}
"""Keys that count things: a whole-number float (6.0) is taken as the int it names, as everywhere in toysuper."""

# Keys that do not change what a configuration computes: left out of its identity.
NON_IDENTITY = ("name", "description", "device", "sae.snapshots")  # snapshots record training, never change it
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


BARE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def parse_override(text: str) -> tuple[str, object]:
    """"sae.l1_coefficient=[0.1, 0.3]" -> ("sae.l1_coefficient", [0.1, 0.3]); values are TOML.

    A bare word (relu_output) is taken as a string; anything else that is not TOML is an error.
    """
    if "=" not in text:
        raise ValueError(f"--set takes key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        return key, tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as error:
        if raw in ("True", "False"):
            raise ValueError(f"--set {key}={raw}: TOML's booleans are lowercase, {raw.lower()}") from None
        if not BARE_WORD.fullmatch(raw):
            hint = ""
            if raw.startswith("["):
                words = [w.strip() for w in raw.strip("[]").split(",")]
                hint = f"; strings in a list need quotes: {key}=[{', '.join(json.dumps(w) for w in words)}]"
            raise ValueError(f"--set {key}={raw}: not a TOML value ({error}){hint}") from None
        return key, raw  # a bare word such as relu_output is a string


def did_you_mean(key: str, known) -> str:
    """"; did you mean 'features.sparsity'?" for a near miss, else where to look."""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(repr(k) for k in close)}? (`toysuper list` shows every key)"
    section = key.split(".")[0]
    same = sorted(k for k in known if k.startswith(section + "."))
    if same:
        return f"; [{section}] takes {', '.join(same)}"
    sections = sorted({k.split(".")[0] for k in known if "." in k})
    return f"; the sections are {', '.join(f'[{s}]' for s in sections)} (`toysuper list` shows every key)"


def _whole(value):
    """6.0 -> 6 (a whole-number float for a count); anything else unchanged, for the checks to name."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _check_name(name) -> None:
    """The name becomes a folder under runs/: one plain path component, so a run never writes elsewhere."""
    if not isinstance(name, str) or not name or name.startswith(".") or any(c in name for c in "/\\:\0") \
            or not name.isprintable():
        raise ValueError(f"name must be a plain folder name (letters, digits, '-', '_', '.'; no '/', no leading "
                         f"'.'), since the run folder is runs/NAME-KEY; got {name!r}")


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
                known = [k for k in SCHEMA if k.startswith("sae.")] + [f"sae.{h}" for r in registry
                                                                      for h in registry[r].hyperparameters]
                near = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(repr(k) for k in near)}?" if near and key not in known else ""
                raise ValueError(f"unknown config key {key!r}: no recipe in sae.recipe={flat['sae.recipe']!r} "
                                 f"has a hyperparameter {parts[1]!r}{hint} (they take {offered}, and the [sae] "
                                 f"section also takes {sorted(k for k in SCHEMA if k.startswith('sae.'))})")
        elif len(parts) == 3 and parts[1] in registry:
            if parts[1] not in recipes:
                raise ValueError(f"config key {key!r} sets recipe {parts[1]!r}, which sae.recipe={flat['sae.recipe']!r} "
                                 f"does not include")
            if parts[2] not in registry[parts[1]].hyperparameters:
                raise ValueError(f"unknown config key {key!r}: recipe {parts[1]!r} has no hyperparameter "
                                 f"{parts[2]!r}; it takes {sorted(registry[parts[1]].hyperparameters)}")
        else:
            near = difflib.get_close_matches(parts[1], list(registry), n=1, cutoff=0.6)
            hint = f"; did you mean a [sae.{near[0]}] table?" if near and len(parts) == 3 else ""
            raise ValueError(f"unknown config key {key!r}{hint}; [sae] takes "
                             f"{sorted(k for k in SCHEMA if k.startswith('sae.'))}, a recipe's hyperparameters, "
                             f"or a [sae.RECIPE] table of them")


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
            raise ValueError(f"unknown config key {key!r}{did_you_mean(key, SCHEMA)}")
        if key in INTEGER_KEYS:
            value = [_whole(v) for v in value] if isinstance(value, list) else _whole(value)
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
    _check_name(flat["name"])
    if not isinstance(flat["description"], str):
        raise ValueError(f"description must be a string, got {flat['description']!r}")
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
    except IsADirectoryError as error:
        raise ValueError(f"config file {str(path)!r} is a directory; give the path of a TOML file") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"config file {str(path)!r} cannot be read: {error}") from error
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
        d_sae = base["sae.d_sae"]
        for name, default in registry[recipe].hyperparameters.items():
            if isinstance(d_sae, int) and not isinstance(d_sae, bool):  # a default may depend on the width (k_aux)
                default = registry[recipe].default(name, d_sae)
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
    return _key(identity(point))


def _key(items: dict, length: int = 16) -> str:
    canonical = json.dumps({k: _canonical(v) for k, v in sorted(items.items())}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:length]


GRADING = "evaluate."
"""Keys under [evaluate] change only how a trained SAE is graded, never what trains."""
TOY_MODEL_KEYS = ("source.kind", "source.d_hidden", "source.toy_model", "source.steps", "source.batch_size",
                  "source.lr")
"""The [source] keys that shape a toy model (with every [features] key and the seed)."""
DICTIONARY_KEYS = ("seed", "features.n_features", "source.d_hidden", "source.dictionary")
"""What a dictionary's directions depend on: every sparsity of a seed reads the same dictionary."""


def train_key(point: dict) -> str:
    """A stable key of what a grid point trains: its identity without the grading keys.

    Points that differ only in [evaluate] share it, and one trained SAE serves them all.
    """
    return _key({k: v for k, v in identity(point).items() if not k.startswith(GRADING)})


def toy_key(point: dict) -> str:
    """A stable key of the toy model a grid point reads: [features], the toy-model keys of [source], the seed."""
    return _key({k: v for k, v in identity(point).items()
                 if k.startswith("features.") or k in TOY_MODEL_KEYS or k == "seed"})


STREAMS = ("directions", "toy_init", "toy_data", "sae_init", "sae_data", "evaluate")


def stream_seed(point: dict, stream: str) -> int:
    """The seed of one random stream of a grid point: a function of the point's configuration alone.

    Every random number a configuration uses comes from one of these streams, so packing
    (which points share a batched pass, how many) never changes a result. Each stream hashes
    the keys it depends on with its own name: the toy model's streams the toy_key (points
    that read one toy model share it), the SAE's and the held-out samples' the train_key
    (grading variants of one SAE share them), the dictionary's only the seed and its shape.
    Seeds are below 2**52, exact in any JSON reader.
    """
    if stream == "directions":
        key = _key({k: point.get(k) for k in DICTIONARY_KEYS})
    elif stream.startswith("toy_"):
        key = toy_key(point)
    elif stream in STREAMS:
        key = train_key(point)
    else:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    return int(hashlib.sha1(f"{stream}:{key}".encode()).hexdigest()[:13], 16)


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

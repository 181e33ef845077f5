"""Experiment configs: TOML files whose list values are sweep axes; the grid is the product of every axis.

One frozen dataclass per section (`SECTIONS`), one field per key (`key`). `resolve` checks each value;
`assemble.check_point` checks what depends on several keys, per grid point. [sae] also takes every
hyperparameter and option of the recipe(s) it names, for all of them (`sae.k = [4, 8]`) or one recipe only
(`[sae.topk] k = [4, 8]`); a hyperparameter is an axis only for the recipes that take it.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import inspect
import itertools
import json
import re
import sys
from collections import namedtuple
from dataclasses import dataclass, field, fields
from pathlib import Path

import tomli_w
import torch

from .. import checks
from ..sae import RECIPES, get_recipe
from ..toy.model import KINDS
from ..truth.magnitudes import MAGNITUDES
from ..worlds import WORLDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


Key = namedtuple("Key", "default help check instance only", defaults=(None, False, None))
"""A key: default (None: absent unless given), meaning, check(key, value), whether it may vary between the
instances of one batched pass (it changes no shape), and the "other" or "other=value" it applies only with."""


def key(*args, **kwargs):
    return field(default=args[0], metadata={"key": Key(*args, **kwargs)})


def rule(ok, what):
    """A check of one value: ok(value), else a ValueError "{key} must be {what}, got {value!r}"."""
    def check(name, value):
        if not ok(value):
            raise ValueError(f"{name} must be {what() if callable(what) else what}, got {value!r}")
    return check


def one_of(choices):
    """A check that a value is one of `choices`, read when checking (a registry may grow)."""
    return rule(lambda value: value in list(choices), lambda: f"one of {list(choices)}")


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _device(value) -> bool:
    try:
        return value == "auto" or torch.device(value).type in ("cpu", "cuda")
    except (RuntimeError, TypeError):
        return False


check_device = rule(_device, "auto, cpu, cuda or cuda:N")  # whether this machine has it: checked at run time

positive, non_negative, whole = checks.positive_float, checks.non_negative, checks.positive_int
count = rule(lambda v: type(v) is int and v >= 0, "a whole number >= 0")
at_least_2 = rule(lambda v: type(v) is int and v >= 2, "a whole number >= 2")
probability = rule(lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]")  # NaN and inf compare false
fraction = rule(lambda v: _real(v) and 0 < v <= 1, "a number in (0, 1]")
boolean = rule(lambda v: isinstance(v, bool), "true or false")
string = rule(lambda v: isinstance(v, str), "a string")
FREQUENCY_LAWS, DICTIONARIES, EXECUTORS = ("constant", "zipf"), ("random", "low_coherence"), ("local", "ray")


@dataclass(frozen=True)
class Experiment:
    name: str = key("experiment", "name of the experiment (the run folder is runs/NAME-HASH)", rule(
        lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", v),  # one folder: runs/NAME
        "a plain folder name (letters, digits, '-', '_', '.'; no leading '.'), since the run folder is runs/NAME-KEY"))
    description: str = key("", "the question the experiment answers", string)
    seed: int = key(0, "replicate seed; a list gives independent replicates trained side by side", count, True)
    device: str = key("auto", "cpu, cuda or auto (CUDA when present)", check_device)


@dataclass(frozen=True)
class Features:  # the planted features: toysuper.FeatureDistribution
    n_features: int = key(20, "number of planted features", whole)
    sparsity: float | None = key(0.9, "S = 1 - mean firing probability (give sparsity or l0)", rule(
        lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1) (at 1 no feature ever fires)"), True)
    l0: float | None = key(None, "mean number of features firing per sample (instead of sparsity)", positive, True)
    frequency: str = key("constant", "firing-probability law across features: constant or zipf", one_of(FREQUENCY_LAWS))
    zipf_exponent: float | None = key(None, "zipf law: p_i proportional to (i+1)^-exponent (default 1)", non_negative,
                                      True, "features.frequency=zipf")
    importance_decay: float = key(1.0, "importance of feature i is decay**i (1: all equal)", fraction, True)
    magnitude: str | None = key(None, "value of a firing feature: uniform (U[0,1], default), constant, exponential, "
                                "folded_normal; parameters in [features.magnitude_params]",
                                one_of(MAGNITUDES))
    correlated_groups: int | None = key(None, "groups of consecutive features (from 0) that fire together", count)
    correlated_group_size: int | None = key(None, "features per correlated group (default 2)", at_least_2,
                                            only="features.correlated_groups")
    correlation: float | None = key(None, "correlation of a correlated group's members' firing (default 0.5)",
                                    probability, only="features.correlated_groups")
    exclusive_groups: int | None = key(None, "groups of consecutive features (after the correlated ones) of which "
                                       "at most one fires", count)
    exclusive_group_size: int | None = key(None, "features per exclusive group (default 2)", at_least_2,
                                           only="features.exclusive_groups")
    hierarchy_parents: int | None = key(None, "parents of a hierarchy, after the groups, each followed by its children",
                                        count)
    hierarchy_children: int | None = key(None, "children per parent, each firing only with its parent (default 2)",
                                         whole, only="features.hierarchy_parents")
    child_prob: float | None = key(None, "P(child fires | parent fires) (default 0.5)", probability,
                                   only="features.hierarchy_parents")
    exclusive_children: bool | None = key(None, "at most one child of a parent fires (default false)", boolean,
                                          only="features.hierarchy_parents")


@dataclass(frozen=True)
class Source:  # where the hidden activations come from: toysuper.ToyModelSource or DictionarySource
    kind: str = key("toy_model", "toy_model (a trained toy model) or dictionary (fixed random unit directions)",
                    one_of(("toy_model", "dictionary")))
    d_hidden: int = key(5, "hidden width", whole)
    toy_model: str = key("relu_output", "toy-model kind: linear, relu_output, hidden_relu", one_of(KINDS))
    steps: int = key(5_000, "toy-model training steps", whole)
    batch_size: int = key(1024, "toy-model batch size", whole)
    lr: float = key(1e-3, "toy-model learning rate (AdamW)", positive)
    noise: float = key(0.0, "dictionary source: std of Gaussian noise in hidden space (snr works for both kinds)",
                       non_negative, only="source.kind=dictionary")
    snr: float | None = key(None, "signal-to-noise power ratio of Gaussian noise added to the hidden activations "
                            "(either source kind; instead of noise)", positive)
    dictionary: str | None = key(None, "dictionary source: random (default) or low_coherence directions",
                                 one_of(DICTIONARIES), only="source.kind=dictionary")
    world: str | None = key(None, "dictionary source: a preset world instead of [features] and the dictionary: "
                            "synthsaebench_16k or synthsaebench_4k (toysuper.worlds)", one_of(WORLDS),
                            only="source.kind=dictionary")


@dataclass(frozen=True)
class Sae:  # toysuper.SAE and train_sae; the recipe's hyperparameters and options are [sae] keys too
    recipe: str = key("anthropic_2024", "SAE recipe (toysuper list shows them)")  # checked in _check_extra_keys
    d_sae: int = key(40, "number of SAE latents", whole)
    steps: int = key(3_000, "SAE training steps", whole)
    batch_size: int = key(1024, "SAE batch size", whole)
    lr: float | None = key(None, "SAE learning rate (default: the recipe's)", positive)
    snapshots: int = key(0, "grade the SAE at this many evenly spaced points of training (recovery over training; "
                         "0: none)", count)


@dataclass(frozen=True)
class Evaluate:
    n_samples: int = key(20_000, "held-out samples for activation-level scores", rule(
        lambda v: type(v) is int and 1 <= v <= 10**8, "a whole number >= 1 and at most 100,000,000 (grading streams "
        "samples in chunks, and 10**8 already take hours on a CPU)"))
    threshold: float = key(0.9, "tau of recovered@tau", fraction)


@dataclass(frozen=True)
class Run:  # how to run, not what: never part of a configuration's identity, never a sweep axis
    memory_mb: float = key(1024, "memory budget of one batched pass, MB (the planner packs instances up to it)",
                           positive)
    max_instances: int = key(32, "at most this many SAE instances in one batched pass (0: no limit)", count)
    threads: int = key(1, "torch CPU threads of an in-process run (0: torch's default); small models run fastest on "
                       "one, and more threads than free cores slow everything down", count)
    save_models: bool = key(False, "save every trained SAE and toy model (safetensors + JSON) in the run folder",
                            boolean)
    executor: str = key("local", "local (in this process) or ray (instance batches as Ray tasks)", one_of(EXECUTORS))
    ray_address: str = key("", "Ray cluster address ('' starts or joins a local instance, 'auto' joins one)",
                           rule(lambda v: isinstance(v, str), "a string ('' starts a local Ray, 'auto' joins one)"))
    gpus_per_batch: float = key(1.0, "GPUs a Ray task claims when the cluster has GPUs", non_negative)
    cpus_per_batch: float = key(1.0, "CPUs a Ray task claims", non_negative)


SECTIONS = {"": Experiment, "features.": Features, "source.": Source, "sae.": Sae, "evaluate.": Evaluate, "run.": Run}
SCHEMA: dict[str, Key] = {prefix + f.name: f.metadata["key"] for prefix, cls in SECTIONS.items() for f in fields(cls)}
INTEGER_KEYS = frozenset(prefix + f.name for prefix, cls in SECTIONS.items() for f in fields(cls)
                         if type(f.default) is int or f.type.startswith("int"))
"""Keys that count things: a whole-number float (6.0) is taken as the int it names, as everywhere in toysuper."""
NON_IDENTITY = ("name", "description", "device", "sae.snapshots")  # snapshots record training, never change it
"""Keys that do not change what a configuration computes (nor does any [run] key): left out of its identity."""
MAGNITUDE_PARAMS = "features.magnitude_params."
TOY_MODEL_KEYS = ("source.kind", "source.d_hidden", "source.toy_model", "source.steps", "source.batch_size",
                  "source.lr")
"""The [source] keys that shape a toy model (with every [features] key and the seed)."""
GRADING = "evaluate."
"""Keys under [evaluate] change only how a trained SAE is graded, never what trains."""
DICTIONARY_KEYS = ("seed", "features.n_features", "source.d_hidden", "source.dictionary")
"""What a dictionary's directions depend on: every sparsity of a seed reads the same dictionary."""
STREAMS = ("directions", "toy_init", "toy_data", "sae_init", "sae_data", "evaluate")


def _recipes(specs=()) -> dict:
    """The registered recipes by name, and those of `specs` named by import path ("module:Class")."""
    try:
        return {**RECIPES, **{spec: get_recipe(spec) for spec in specs if isinstance(spec, str) and ":" in spec}}
    except ValueError as error:
        raise ValueError(f"sae.recipe: {error}") from error


def _takes(recipe) -> dict:
    """A recipe's [sae] keys and their defaults: its hyperparameters (per instance) and options (per SAE)."""
    return {**recipe.hyperparameters, **{name: recipe.option_default(name) for name in recipe.options}}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def flatten(config: dict, prefix: str = "") -> dict:
    """{"sae": {"d_sae": 40}} -> {"sae.d_sae": 40}."""
    flat = {}
    for name, value in config.items():
        flat.update(flatten(value, f"{prefix}{name}.") if isinstance(value, dict) else {f"{prefix}{name}": value})
    return flat


def unflatten(flat: dict) -> dict:
    """{"sae.d_sae": 40} -> {"sae": {"d_sae": 40}}."""
    nested: dict = {}
    for dotted, value in flat.items():
        *path, name = dotted.split(".")
        functools.reduce(lambda table, part: table.setdefault(part, {}), path, nested)[name] = value
    return nested


def parse_override(text: str) -> tuple[str, object]:
    """"sae.l1_coefficient=[0.1, 0.3]" -> ("sae.l1_coefficient", [0.1, 0.3]): a TOML value, or a bare word."""
    if "=" not in text:
        raise ValueError(f"--set takes key=value, got {text!r}")
    name, raw = (part.strip() for part in text.split("=", 1))
    try:
        return name, tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError as error:
        if raw in ("True", "False"):
            raise ValueError(f"--set {name}={raw}: TOML's booleans are lowercase, {raw.lower()}") from None
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", raw):
            return name, raw  # relu_output: a string
        hint = ""
        if raw.startswith("["):
            words = ", ".join(json.dumps(w.strip()) for w in raw.strip("[]").split(","))
            hint = f"; strings in a list need quotes: {name}=[{words}]"
        raise ValueError(f"--set {name}={raw}: not a TOML value ({error}){hint}") from None


def did_you_mean(name: str, known) -> str:
    """"; did you mean 'features.sparsity'?" for a near miss, else where to look."""
    close = difflib.get_close_matches(name, [k for k in known if k != name], n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(repr(k) for k in close)}? (`toysuper list` shows every key)"
    same = sorted(k for k in known if k.startswith(name.split(".")[0] + "."))
    if same:
        return f"; [{name.split('.')[0]}] takes {', '.join(same)}"
    sections = sorted({k.split(".")[0] for k in known if "." in k})
    return f"; the sections are {', '.join(f'[{s}]' for s in sections)} (`toysuper list` shows every key)"


def _check_extra_keys(flat: dict) -> None:
    """sae.<hp> must belong to a swept recipe, sae.<recipe>.<hp> to that recipe, and every
    features.magnitude_params.<name> to each swept magnitude law."""
    recipes = _as_list(flat["sae.recipe"])
    registry = _recipes(recipes)
    for recipe in recipes:
        if not isinstance(recipe, str) or recipe not in registry:
            raise ValueError(f"sae.recipe must be one of {sorted(registry)}, got {recipe!r}")

    def keys(names):
        return {f"sae{table}.{h}" for r in names for table in ("", f".{r}") for h in _takes(registry[r])}

    schema = sorted(k for k in SCHEMA if k.startswith("sae."))
    known = {*schema, *keys(recipes)}
    magnitudes = _as_list(flat.get("features.magnitude", "uniform"))
    laws = {law: inspect.signature(MAGNITUDES[law]).parameters for law in magnitudes}
    for name in flat:
        parts = name.split(".")
        if name.startswith(MAGNITUDE_PARAMS):
            for law, accepted in laws.items():
                if parts[-1] not in accepted:
                    raise ValueError(f"unknown config key {name!r}: magnitude law {law!r} takes {list(accepted)}")
        elif parts[0] == "sae" and name not in known:
            if len(parts) == 3 and parts[1] in registry:
                raise ValueError(f"config key {name!r} sets recipe {parts[1]!r}, which sae.recipe="
                                 f"{flat['sae.recipe']!r} does not include")
            takes = {r: sorted(_takes(registry[r])) for r in recipes}
            raise ValueError(f"unknown config key {name!r}: sae.recipe={flat['sae.recipe']!r} takes {takes} and "
                             f"{schema}{did_you_mean(name, known | keys(registry))}")


def resolve(user: dict, overrides: list[str] = ()) -> dict:
    """Defaults, then the user's config, then --set overrides; an unknown key or a bad value raises an error
    naming the key and the value."""
    flat = {name: spec.default for name, spec in SCHEMA.items() if spec.default is not None}
    given = flatten(user)
    for text in overrides:
        name, value = parse_override(text)
        given.update(flatten({name: value}))  # --set sae.topk={k=4}: a table, as flat keys
    for name, value in given.items():
        if name not in SCHEMA and not name.startswith(("sae.", MAGNITUDE_PARAMS)):
            raise ValueError(f"unknown config key {name!r}{did_you_mean(name, SCHEMA)}")
        if name in INTEGER_KEYS:  # 6.0 -> 6; anything else unchanged, for the checks to name
            value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in _as_list(value)]
            value = value if isinstance(given[name], list) else value[0]
        if isinstance(value, list) and not value:
            raise ValueError(f"config key {name!r} is an empty list: a sweep axis needs at least one value")
        if isinstance(value, list) and not is_identity(name):
            raise ValueError(f"config key {name!r} cannot be a sweep axis (it says how to run, not what), "
                             f"got {value!r}")
        if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
            raise ValueError(f"config key {name!r}: a sweep axis is a list of plain values, got {value!r}")
        for one in _as_list(value):
            if name in SCHEMA and SCHEMA[name].check:
                SCHEMA[name].check(name, one)
        flat[name] = value
    if "features.l0" in given and "features.sparsity" in given:
        raise ValueError("give features.sparsity or features.l0, not both: they set the same thing "
                         f"(got sparsity={given['features.sparsity']!r}, l0={given['features.l0']!r})")
    if "features.l0" in given:
        del flat["features.sparsity"]
    toy_keys = [k for k in TOY_MODEL_KEYS[2:] if k in given and flat[k] != SCHEMA[k].default]
    if toy_keys and "toy_model" not in _as_list(flat["source.kind"]):
        raise ValueError(f"{toy_keys[0]} applies only to source.kind = \"toy_model\" (a dictionary source trains no "
                         f"toy model), got {toy_keys[0]}={given[toy_keys[0]]!r} with kind {flat['source.kind']!r}")
    _check_extra_keys(flat)
    return unflatten(flat)


def load(path, overrides: list[str] = ()) -> dict:
    """Read a TOML experiment file and resolve it against the defaults."""
    path = Path(path)
    try:
        user = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is no statement
    except (OSError, UnicodeDecodeError) as error:
        why = {FileNotFoundError: "does not exist", IsADirectoryError: "is a directory; give the path of a TOML file"}
        raise ValueError(f"config file {str(path)!r} {why.get(type(error), f'cannot be read: {error}')}") from error
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {error}") from error
    return resolve(user, overrides)


def to_toml(config: dict) -> str:
    """A resolved config (tables of scalars and lists of scalars) as TOML."""
    return tomli_w.dumps(config)


def is_hyperparameter(name: str) -> bool:
    """sae.<hp> or sae.<recipe>.<hp>: a recipe hyperparameter rather than a schema key."""
    return name.startswith("sae.") and name not in SCHEMA


def is_instance_axis(name: str) -> bool:
    """Whether `name` may vary between the instances of one batched pass."""
    return is_hyperparameter(name) or (name in SCHEMA and SCHEMA[name].instance)


def is_identity(name: str) -> bool:
    """Whether `name` changes what a configuration computes (see NON_IDENTITY)."""
    return name not in NON_IDENTITY and name.split(".")[0] != "run"


def axes(config: dict) -> dict[str, list]:
    """The sweep axes: every key whose value is a list, recipe hyperparameters as sae.<hp>."""
    found: dict[str, list] = {}
    for name, value in flatten(config).items():
        if isinstance(value, list):
            short = found.setdefault(f"sae.{name.split('.')[-1]}" if is_hyperparameter(name) else name, [])
            short += [v for v in value if v not in short]
    return found


def expand(config: dict) -> list[dict]:
    """Every grid point as a flat dict of scalars, in a stable order. Each point carries the hyperparameters of its
    own recipe as sae.<hp> (recipe table first, then the [sae] value, then the recipe's default)."""
    flat = flatten(config)
    plain = {k: v for k, v in flat.items() if not is_hyperparameter(k)}
    sweep = {k: v for k, v in plain.items() if isinstance(v, list)}
    registry = _recipes(_as_list(flat.get("sae.recipe", [])))
    points = []
    for values in itertools.product(*sweep.values()):
        base = {**plain, **dict(zip(sweep, values))}
        recipe, d_sae = registry[base["sae.recipe"]], base["sae.d_sae"]
        hyper = {}
        for name, default in _takes(recipe).items():
            if type(d_sae) is int and name not in recipe.options:
                default = recipe.default(name, d_sae)  # a default may depend on the width (k_aux)
            hyper[f"sae.{name}"] = flat.get(f"sae.{base['sae.recipe']}.{name}", flat.get(f"sae.{name}", default))
        hyper_axes = {k: v for k, v in hyper.items() if isinstance(v, list)}
        for hyper_values in itertools.product(*hyper_axes.values()):
            points.append({**base, **hyper, **dict(zip(hyper_axes, hyper_values))})
    return points


def identity(point: dict) -> dict:
    """The keys of a grid point (or a flat config) that decide what it computes."""
    return {k: v for k, v in point.items() if is_identity(k)}


def _canonical(value):
    """Numbers that compare equal hash equal (3 and 3.0 are one configuration)."""
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _key(items: dict, length: int = 16) -> str:
    canonical = json.dumps({k: _canonical(v) for k, v in sorted(items.items())}, sort_keys=True)
    return hashlib.sha1(canonical.encode()).hexdigest()[:length]


def point_key(point: dict) -> str:
    """A stable 16-hex-digit key of what a grid point computes (its identity keys and values)."""
    return _key(identity(point))


def train_key(point: dict) -> str:
    """What a grid point trains: its identity without [evaluate] (one trained SAE serves every grading of it)."""
    return _key({k: v for k, v in identity(point).items() if not k.startswith(GRADING)})


def toy_key(point: dict) -> str:
    """The toy model a grid point reads: its [features], toy-model [source] keys and seed."""
    return _key({k: v for k, v in identity(point).items()
                 if k.startswith("features.") or k in TOY_MODEL_KEYS or k == "seed"})


def config_key(config: dict) -> str:
    """A stable 8-hex-digit key of what a whole config computes (its identity keys)."""
    return _key(identity(flatten(config)), length=8)


def identity_differences(old: dict, new: dict) -> list[str]:
    """The identity keys whose values differ between two resolved configs."""
    a, b = ({k: _canonical(v) for k, v in identity(flatten(c)).items()} for c in (old, new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def stream_seed(point: dict, stream: str) -> int:
    """The seed of one random stream of a grid point, below 2**52 (exact in any JSON reader): a hash of the
    stream's name and the keys it depends on, so packing never changes a result (the toy model's: the toy_key;
    the SAE's and the held-out samples': the train_key; the dictionary's: DICTIONARY_KEYS)."""
    if stream == "directions":
        key = _key({k: point.get(k) for k in DICTIONARY_KEYS})
    elif stream.startswith("toy_"):
        key = toy_key(point)
    elif stream in STREAMS:
        key = train_key(point)
    else:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    return int(hashlib.sha1(f"{stream}:{key}".encode()).hexdigest()[:13], 16)

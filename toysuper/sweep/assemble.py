"""From grid points to the objects they train: feature distribution, source, SAE.

Every value check of a config lives here, so that `plan` rejects a point that cannot train
(naming its key) before anything trains. Adding a ground-truth option is three steps: a key
in `config.SCHEMA`, a check in `check_point`, and its use in `distribution` or a source.
"""

from __future__ import annotations

import functools

import torch

from .. import checks
from .config import MAGNITUDE_PARAMS, stream_seed, toy_key
from ..truth.dictionaries import low_coherence_directions
from ..truth.distribution import FeatureDistribution
from ..truth.groups import CorrelatedGroups, ExclusiveGroups
from ..truth.hierarchy import Hierarchy
from ..truth.magnitudes import MAGNITUDES
from ..truth import worlds
from ..sae import SAE, get_recipe
from ..sources import DictionarySource, ToyModelSource, random_directions
from ..toy.model import KINDS as TOY_MODEL_KINDS
from ..toy.model import ToyModel

SOURCE_KINDS = ("toy_model", "dictionary")
DICTIONARIES = ("random", "low_coherence")
FREQUENCY_LAWS = ("constant", "zipf")

def _in_unit_interval(key: str, value, low_open: bool = False) -> float:
    value = checks.finite_float(key, value)
    if not (0 < value <= 1 if low_open else 0 <= value <= 1):
        raise ValueError(f"{key} must lie in {'(0' if low_open else '[0'}, 1], got {value!r}")
    return value


def _choice(key: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")


def check_point(point: dict) -> None:
    """Reject a grid point that cannot train, naming the key, before anything trains."""
    for key in ("features.n_features", "source.d_hidden", "source.steps", "source.batch_size", "sae.d_sae",
                "sae.steps", "sae.batch_size", "evaluate.n_samples"):
        checks.positive_int(key, point[key])
    if isinstance(point["seed"], bool) or not isinstance(point["seed"], int) or point["seed"] < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {point['seed']!r}")
    checks.non_negative("source.noise", point["source.noise"])
    checks.positive_float("source.lr", point["source.lr"])
    if point.get("sae.lr") is not None:
        checks.positive_float("sae.lr", point["sae.lr"])
    checks.non_negative("sae.snapshots", point.get("sae.snapshots", 0))
    n_features = point["features.n_features"]
    if "features.l0" in point:
        l0 = checks.finite_float("features.l0", point["features.l0"])
        if not 0 < l0 <= n_features:
            raise ValueError(f"features.l0 must lie in (0, features.n_features={n_features}], got {l0!r}")
    else:
        _in_unit_interval("features.sparsity", point["features.sparsity"])
    _in_unit_interval("features.importance_decay", point["features.importance_decay"], low_open=True)
    _in_unit_interval("evaluate.threshold", point["evaluate.threshold"], low_open=True)
    _choice("features.frequency", point["features.frequency"], FREQUENCY_LAWS)
    if point["features.frequency"] == "zipf":
        if checks.finite_float("features.zipf_exponent", point.get("features.zipf_exponent", 1.0)) < 0:
            raise ValueError(f"features.zipf_exponent must be >= 0, got {point['features.zipf_exponent']!r}")
    elif "features.zipf_exponent" in point:
        raise ValueError(f"features.zipf_exponent applies only to features.frequency = \"zipf\", "
                         f"got frequency {point['features.frequency']!r}")
    _check_structure(point)
    _choice("source.kind", point["source.kind"], SOURCE_KINDS)
    _choice("source.toy_model", point["source.toy_model"], TOY_MODEL_KINDS)
    if point["source.kind"] == "toy_model" and point["source.noise"] > 0:
        raise ValueError(f"source.noise applies only to source.kind = \"dictionary\", got noise "
                         f"{point['source.noise']!r} with a toy model (source.snr works for both)")
    if "source.snr" in point:
        if checks.finite_float("source.snr", point["source.snr"]) <= 0:
            raise ValueError(f"source.snr must be > 0 (a power ratio), got {point['source.snr']!r}")
        if point["source.noise"] > 0:
            raise ValueError(f"give source.noise or source.snr, not both (got {point['source.noise']!r} and "
                             f"{point['source.snr']!r})")
    if "source.dictionary" in point:
        if point["source.kind"] != "dictionary":
            raise ValueError(f"source.dictionary applies only to source.kind = \"dictionary\", got kind "
                             f"{point['source.kind']!r}")
        _choice("source.dictionary", point["source.dictionary"], DICTIONARIES)
    if "source.world" in point:
        _check_world(point)
    recipe = get_recipe(point["sae.recipe"])
    hyper = tuple((name, point[f"sae.{name}"]) for name in recipe.hyperparameters)
    _check_sae(recipe.name, point["source.d_hidden"], point["sae.d_sae"], hyper)


def _check_world(point: dict) -> None:
    _choice("source.world", point["source.world"], worlds.WORLDS)
    if point["source.kind"] != "dictionary":
        raise ValueError(f"source.world applies only to source.kind = \"dictionary\", got {point['source.kind']!r}")
    n_features, d_hidden = worlds.WORLDS[point["source.world"]]
    if (point["features.n_features"], point["source.d_hidden"]) != (n_features, d_hidden):
        raise ValueError(f"source.world {point['source.world']!r} has {n_features} features in {d_hidden} dims: set "
                         f"features.n_features = {n_features} and source.d_hidden = {d_hidden}")


@functools.lru_cache(maxsize=4096)
def _check_sae(recipe: str, d_hidden: int, d_sae: int, hyper: tuple) -> None:
    """The recipe's own checks (k <= d_sae, whole numbers, ...) on a throwaway one-instance SAE."""
    try:
        SAE(d_hidden, d_sae, 1, recipe=recipe, seed=0, device="cpu", **dict(hyper))
    except (ValueError, TypeError) as error:
        raise type(error)(f"sae (recipe {recipe!r}, d_sae={d_sae}, "
                          f"{', '.join(f'sae.{k}={v!r}' for k, v in hyper)}): {error}") from error


STRUCTURE_DEFAULTS = {"features.correlated_group_size": 2, "features.correlation": 0.5,
                      "features.exclusive_group_size": 2, "features.hierarchy_children": 2,
                      "features.child_prob": 0.5, "features.exclusive_children": False}
STRUCTURE_OWNERS = {"features.correlated_group_size": "features.correlated_groups",
                    "features.correlation": "features.correlated_groups",
                    "features.exclusive_group_size": "features.exclusive_groups",
                    "features.hierarchy_children": "features.hierarchy_parents",
                    "features.child_prob": "features.hierarchy_parents",
                    "features.exclusive_children": "features.hierarchy_parents"}


def _setting(point: dict, key: str):
    return point.get(key, STRUCTURE_DEFAULTS.get(key))


def _check_structure(point: dict) -> None:
    """Groups and hierarchy: counts, sizes, and that they fit in n_features; then the distribution's own checks."""
    for key, owner in STRUCTURE_OWNERS.items():
        if key in point and owner not in point:
            raise ValueError(f"{key} applies only together with {owner}")
    used = 0
    for count, size in (("features.correlated_groups", "features.correlated_group_size"),
                        ("features.exclusive_groups", "features.exclusive_group_size"),
                        ("features.hierarchy_parents", "features.hierarchy_children")):
        if count in point:
            n = point[count]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{count} must be a whole number >= 0, got {n!r}")
            per = checks.positive_int(size, _setting(point, size))
            if size != "features.hierarchy_children" and per < 2:
                raise ValueError(f"{size} must be at least 2, got {per!r}")
            used += n * (per + (count == "features.hierarchy_parents"))
    if used > point["features.n_features"]:
        raise ValueError(f"the groups and hierarchy need {used} features but features.n_features is "
                         f"{point['features.n_features']}")
    if "features.correlation" in point:
        _in_unit_interval("features.correlation", point["features.correlation"])
    if "features.child_prob" in point:
        _in_unit_interval("features.child_prob", point["features.child_prob"])
    if not isinstance(_setting(point, "features.exclusive_children"), bool):
        raise ValueError(f"features.exclusive_children must be true or false, got {point['features.exclusive_children']!r}")
    if "features.magnitude" in point or any(k.startswith(MAGNITUDE_PARAMS) for k in point):
        try:
            magnitude(point).resolve(1, point["features.n_features"], "cpu")
        except (ValueError, TypeError) as error:
            raise type(error)(f"features.magnitude {point.get('features.magnitude', 'uniform')!r}: {error}") from error
    if any(owner in point for owner in set(STRUCTURE_OWNERS.values())):
        try:  # e.g. an exclusive group whose rates add up to more than 1
            distribution([point], "cpu")
        except (ValueError, TypeError) as error:
            raise type(error)(f"features (groups/hierarchy): {error}") from error


def magnitude(point: dict):
    """The magnitude law of a point (features.magnitude with its [features.magnitude_params])."""
    params = {k[len(MAGNITUDE_PARAMS):]: v for k, v in point.items() if k.startswith(MAGNITUDE_PARAMS)}
    return MAGNITUDES[point.get("features.magnitude", "uniform")](**params)


def structure(point: dict) -> dict:
    """FeatureDistribution keyword arguments for the groups and hierarchy of a point (laid out from feature 0)."""
    kwargs, start = {}, 0
    if point.get("features.correlated_groups"):
        size = _setting(point, "features.correlated_group_size")
        kwargs["correlated_groups"] = CorrelatedGroups.consecutive(point["features.correlated_groups"], size, start,
                                                                   correlation=_setting(point, "features.correlation"))
        start += point["features.correlated_groups"] * size
    if point.get("features.exclusive_groups"):
        size = _setting(point, "features.exclusive_group_size")
        kwargs["exclusive_groups"] = ExclusiveGroups.consecutive(point["features.exclusive_groups"], size, start)
        start += point["features.exclusive_groups"] * size
    if point.get("features.hierarchy_parents"):
        kwargs["hierarchy"] = Hierarchy.regular(point["features.hierarchy_parents"],
                                                _setting(point, "features.hierarchy_children"), start,
                                                exclusive_children=_setting(point, "features.exclusive_children"),
                                                child_prob=_setting(point, "features.child_prob"))
    return kwargs


def firing_probabilities(point: dict) -> torch.Tensor:
    """Every feature's firing probability for one point, (n_features,) float32 on the CPU.

    The knob is sparsity S (mean firing probability 1 - S) or the mean L0 directly; the law
    spreads that mean over the features (constant: the same for all; zipf: a power law).
    """
    n = point["features.n_features"]
    l0 = point["features.l0"] if "features.l0" in point else n * (1.0 - point["features.sparsity"])
    if point["features.frequency"] == "zipf":
        from ..truth.frequencies import Zipf

        if l0 == 0:
            return torch.zeros(n)
        return Zipf(exponent=point.get("features.zipf_exponent", 1.0), l0=float(l0)).resolve(1, n, "cpu")[0]
    return torch.full((n,), float(l0) / n)


def importance(point: dict) -> torch.Tensor:
    """Importance of each feature, decay**i: (n_features,)."""
    return point["features.importance_decay"] ** torch.arange(point["features.n_features"], dtype=torch.float32)


def distribution(points: list[dict], device) -> FeatureDistribution:
    """One distribution instance per point; the points share every non-instance [features] key."""
    first = points[0]
    extra = structure(first)
    if "features.magnitude" in first or any(k.startswith(MAGNITUDE_PARAMS) for k in first):
        extra["magnitude"] = magnitude(first)
    return FeatureDistribution(first["features.n_features"], torch.stack([firing_probabilities(p) for p in points]),
                               n_instances=len(points), importance=torch.stack([importance(p) for p in points]),
                               device=device, **extra)


def toy_model(points: list[dict], device) -> ToyModel:
    """An untrained toy model with one instance per point, each initialised from the point's own stream."""
    first = points[0]
    return ToyModel(first["features.n_features"], first["source.d_hidden"], len(points), kind=first["source.toy_model"],
                    seed=[stream_seed(p, "toy_init") for p in points], device=device)


def toy_model_view(model: ToyModel, instances: list[int]) -> ToyModel:
    """A toy model whose instance j is a copy of `model`'s instance instances[j] (one per SAE that reads it)."""
    view = ToyModel(model.n_features, model.d_hidden, len(instances), kind=model.kind, device=model.W.device)
    index = torch.as_tensor(instances, device=model.W.device)
    with torch.no_grad():
        view.W.copy_(model.W[index])
        view.b.copy_(model.b[index])
    return view


def directions(point: dict, device) -> torch.Tensor:
    """A point's dictionary, (1, n_features, d_hidden): it depends on the point's seed and shape only
    (config.DICTIONARY_KEYS), so every sparsity of a seed reads the same dictionary."""
    n, d, seed = point["features.n_features"], point["source.d_hidden"], stream_seed(point, "directions")
    if point.get("source.dictionary", "random") == "low_coherence":
        return low_coherence_directions(n, d, seed=seed, device=device).directions
    return random_directions(n, d, seed=seed, device=device)


def _snr(point: dict) -> dict:
    return {"snr": point["source.snr"]} if "source.snr" in point else {}


def dictionary_source(points: list[dict], device) -> DictionarySource:
    """Fixed unit directions per point (random or low-coherence, from the point's seed), or a preset world
    (every point the same world, each its own data stream)."""
    first = points[0]
    if "source.world" in first:
        return worlds.named(first["source.world"], n_instances=len(points), device=device)
    cache: dict[int, torch.Tensor] = {}
    seeds = [stream_seed(p, "directions") for p in points]
    for seed, p in zip(seeds, points):  # one dictionary per distinct seed, shared by the points that have it
        if seed not in cache:
            cache[seed] = directions(p, device)
    stacked = torch.cat([cache[seed] for seed in seeds])
    return DictionarySource(stacked, distribution(points, device), noise=first["source.noise"], **_snr(first))


def toy_model_source(model: ToyModel, toy_instance: list[int], points: list[dict], device) -> ToyModelSource:
    """The hidden activations SAE instance j reads: toy-model instance toy_instance[j] on point j's features.

    One source instance per SAE point, so that each SAE's data come from its own stream.
    """
    return ToyModelSource(toy_model_view(model, toy_instance), distribution(points, device), **_snr(points[0]))


def distinct_toy_models(points: list[dict]) -> tuple[list[dict], list[int]]:
    """(one point per distinct toy model, in order; the toy-model instance of each point)."""
    keys = [toy_key(p) for p in points]
    order = list(dict.fromkeys(keys))
    return [points[keys.index(k)] for k in order], [order.index(k) for k in keys]


def sae(points: list[dict], device) -> SAE:
    """An untrained SAE with one instance per point, each with its point's hyperparameters and own seed."""
    first = points[0]
    recipe = get_recipe(first["sae.recipe"])
    hyper = {name: [p[f"sae.{name}"] for p in points] for name in recipe.hyperparameters}
    return SAE(first["source.d_hidden"], first["sae.d_sae"], len(points), recipe=recipe.name,
               seed=[stream_seed(p, "sae_init") for p in points], device=device, **hyper)


def sae_train_settings(point: dict) -> dict:
    """Keyword arguments of train_sae that the config sets (the rest come from the recipe)."""
    settings = {"steps": point["sae.steps"], "batch_size": point["sae.batch_size"]}
    if point.get("sae.lr") is not None:
        settings["lr"] = point["sae.lr"]
    if point.get("sae.snapshots"):
        settings["snapshots"] = point["sae.snapshots"]
    return settings

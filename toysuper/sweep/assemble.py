"""From grid points to the objects they train: feature distribution, source, SAE."""

from __future__ import annotations

import functools

import torch

from .. import worlds
from ..sae import SAE, get_recipe
from ..sources import DictionarySource, ToyModelSource
from ..toy.model import ToyModel
from ..truth.dictionaries import low_coherence_directions, random_directions
from ..truth.distribution import FeatureDistribution
from ..truth.frequencies import Zipf
from ..truth.groups import CorrelatedGroups, ExclusiveGroups
from ..truth.hierarchy import Hierarchy
from ..truth.magnitudes import MAGNITUDES
from .config import MAGNITUDE_PARAMS, SCHEMA, stream_seed, toy_key

STRUCTURED = ("features.magnitude", "features.correlated_groups", "features.exclusive_groups",
              "features.hierarchy_parents")


def check_point(point: dict) -> None:
    """Reject a grid point that cannot train, naming its keys, before anything trains or is allocated: `config.resolve`
    checked each key's value; what depends on several keys is checked here, by building what the point describes
    without its weights (a one-instance feature distribution, `SAE.check_arguments`)."""
    for name, value in point.items():
        only = name in SCHEMA and SCHEMA[name].only
        if only and value is not None and value != SCHEMA[name].default:
            other, _, wanted = only.partition("=")
            if not wanted and point.get(other) is None:
                raise ValueError(f"{name} applies only together with {other}, got {name}={value!r}")
            if wanted and point[other] != wanted:
                raise ValueError(f"{name} applies only to {other} = {wanted!r}, got {name}={value!r} with "
                                 f"{other}={point[other]!r} ({SCHEMA[name].help})")
    n_features = point["features.n_features"]
    if point.get("features.l0", 0) > n_features:
        raise ValueError(f"features.l0 must lie in (0, features.n_features={n_features}], got {point['features.l0']!r}")
    if "source.snr" in point and point["source.noise"] > 0:
        raise ValueError(f"give source.noise or source.snr, not both (got {point['source.noise']!r} and "
                         f"{point['source.snr']!r})")
    if "source.world" in point and worlds.WORLDS[point["source.world"]] != (n_features, point["source.d_hidden"]):
        n, d = worlds.WORLDS[point["source.world"]]
        raise ValueError(f"source.world {point['source.world']!r} has {n} features in {d} dims: set "
                         f"features.n_features = {n} and source.d_hidden = {d}")
    features = tuple((k, v) for k, v in point.items() if k.startswith("features."))
    if any(k in STRUCTURED or k.startswith(MAGNITUDE_PARAMS) for k, _ in features):  # else nothing more to check
        _check_features(features)
    recipe = get_recipe(point["sae.recipe"])
    hyper = tuple((name, point[f"sae.{name}"]) for name in (*recipe.hyperparameters, *recipe.options))
    _check_sae(point["sae.recipe"], point["source.d_hidden"], point["sae.d_sae"], hyper)


@functools.lru_cache(maxsize=4096)
def _check_features(features: tuple) -> None:
    """The feature distribution's own checks (groups that fit, a magnitude law's parameters, ...)."""
    try:
        distribution([dict(features)], "cpu")
    except (ValueError, TypeError) as error:
        raise type(error)(f"[features] ({', '.join(f'{k}={v!r}' for k, v in features)}): {error}") from error


@functools.lru_cache(maxsize=4096)
def _check_sae(recipe: str, d_hidden: int, d_sae: int, hyper: tuple) -> None:
    """The SAE's checks of its sizes and hyperparameters (k <= d_sae, ...), on no weights: a width of 10**8
    allocates nothing."""
    try:
        SAE.check_arguments(d_hidden, d_sae, recipe=recipe, **dict(hyper))
    except (ValueError, TypeError) as error:
        raise type(error)(f"sae (recipe {recipe!r}, d_sae={d_sae}, "
                          f"{', '.join(f'sae.{k}={v!r}' for k, v in hyper)}): {error}") from error


def firing_probabilities(point: dict) -> torch.Tensor:
    """Every feature's firing probability for one point, (n_features,) float32 on the CPU: the mean L0
    (n_features * (1 - sparsity), or l0) spread over the features by the frequency law."""
    n = point["features.n_features"]
    l0 = float(point["features.l0"] if "features.l0" in point else n * (1.0 - point["features.sparsity"]))
    if point["features.frequency"] == "zipf" and l0 > 0:
        return Zipf(exponent=point.get("features.zipf_exponent", 1.0), l0=l0).resolve(1, n, "cpu")[0]
    return torch.full((n,), l0 / n)


def distribution(points: list[dict], device) -> FeatureDistribution:
    """One distribution instance per point (importance decay**i); the points share every non-instance
    [features] key. Correlated groups, exclusive groups and the hierarchy are laid out in that order from
    feature 0, an absent setting taking the default its key's help names."""
    first = points[0]
    n = first["features.n_features"]

    def get(name, default=0):
        return first.get(f"features.{name}", default)

    extra, start = {}, 0
    for kind, cls in (("correlated", CorrelatedGroups), ("exclusive", ExclusiveGroups)):
        groups, size = get(f"{kind}_groups"), get(f"{kind}_group_size", 2)
        if groups:
            options = {"correlation": get("correlation", 0.5)} if cls is CorrelatedGroups else {}
            extra[f"{kind}_groups"] = cls.consecutive(groups, size, start, **options)
            start += groups * size
    if get("hierarchy_parents"):
        extra["hierarchy"] = Hierarchy.regular(get("hierarchy_parents"), get("hierarchy_children", 2), start,
                                               exclusive_children=get("exclusive_children", False),
                                               child_prob=get("child_prob", 0.5))
    params = {k[len(MAGNITUDE_PARAMS):]: v for k, v in first.items() if k.startswith(MAGNITUDE_PARAMS)}
    if "features.magnitude" in first or params:
        extra["magnitude"] = MAGNITUDES[get("magnitude", "uniform")](**params)
    importance = [p["features.importance_decay"] ** torch.arange(n, dtype=torch.float32) for p in points]
    return FeatureDistribution(n, torch.stack([firing_probabilities(p) for p in points]), n_instances=len(points),
                               importance=torch.stack(importance), device=device, **extra)


def toy_model(points: list[dict], device) -> ToyModel:
    """An untrained toy model with one instance per point, each initialised from the point's own stream."""
    first = points[0]
    return ToyModel(first["features.n_features"], first["source.d_hidden"], len(points), kind=first["source.toy_model"],
                    seed=[stream_seed(p, "toy_init") for p in points], device=device)


def distinct_toy_models(points: list[dict]) -> tuple[list[dict], list[int]]:
    """(one point per distinct toy model, in order; the toy-model instance of each point)."""
    keys = [toy_key(p) for p in points]
    order = list(dict.fromkeys(keys))
    return [points[keys.index(k)] for k in order], [order.index(k) for k in keys]


def _snr(point: dict) -> dict:
    return {"snr": point["source.snr"]} if "source.snr" in point else {}


def toy_model_source(model: ToyModel, toy_instance: list[int], points: list[dict], device) -> ToyModelSource:
    """The hidden activations SAE instance j reads (from its own stream): toy-model instance toy_instance[j]
    on point j's features."""
    view = ToyModel(model.n_features, model.d_hidden, len(toy_instance), kind=model.kind, device=model.W.device)
    index = torch.as_tensor(toy_instance, device=model.W.device)
    with torch.no_grad():
        view.W.copy_(model.W[index])
        view.b.copy_(model.b[index])
    return ToyModelSource(view, distribution(points, device), **_snr(points[0]))


def dictionary_source(points: list[dict], device) -> DictionarySource:
    """Fixed unit directions per point, random or low-coherence, (1, n_features, d_hidden) each: from the
    point's seed and shape only (config.DICTIONARY_KEYS), one per distinct seed, shared. Or a preset world
    (every point the same world, each its own data stream)."""
    first = points[0]
    if "source.world" in first:
        return worlds.named(first["source.world"], n_instances=len(points), device=device)
    seeds, made = [stream_seed(p, "directions") for p in points], {}
    for seed, p in dict(zip(seeds, points)).items():
        n, d = p["features.n_features"], p["source.d_hidden"]
        if p.get("source.dictionary", "random") == "low_coherence":
            made[seed] = low_coherence_directions(n, d, seed=seed, device=device).directions
        else:
            made[seed] = random_directions(n, d, seed=seed, device=device)
    stacked = torch.cat([made[seed] for seed in seeds])
    return DictionarySource(stacked, distribution(points, device), noise=first["source.noise"], **_snr(first))


def sae(points: list[dict], device) -> SAE:
    """An untrained SAE with one instance per point, each with its point's hyperparameters and own seed."""
    first = points[0]
    recipe = get_recipe(first["sae.recipe"])
    hyper = {name: [p[f"sae.{name}"] for p in points] for name in recipe.hyperparameters}
    return SAE(first["source.d_hidden"], first["sae.d_sae"], len(points), recipe=recipe,
               seed=[stream_seed(p, "sae_init") for p in points], device=device, **hyper,
               **{name: first[f"sae.{name}"] for name in recipe.options})  # per SAE: the planner groups by them


def sae_train_settings(point: dict) -> dict:
    """Keyword arguments of train_sae that the config sets (the rest come from the recipe)."""
    return {name: point[f"sae.{name}"] for name in ("steps", "batch_size", "lr", "snapshots")
            if point.get(f"sae.{name}")}  # steps and batch_size are >= 1, an lr > 0

"""Activation sources: hidden activations paired with the truth that made them.

Every source yields `Batch(hidden, features)` with hidden (batch, inst, d_hidden) and
features (batch, inst, n_features), and knows the true unit directions of its features
in hidden space, (inst, n_features, d_hidden), and which features are gradeable.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

from .checks import finite_tensor, non_negative
from .devices import make_generator, resolve_device
from .features import FeatureDistribution
from .toy_models import ToyModel


class Batch(NamedTuple):
    """One draw from a source."""

    hidden: torch.Tensor
    """Hidden activations the SAE sees, (batch, inst, d_hidden)."""
    features: torch.Tensor
    """Ground-truth feature activations behind them, (batch, inst, n_features)."""


@runtime_checkable
class ActivationSource(Protocol):
    """What an SAE trainer and the evaluator need from a source."""

    n_instances: int
    n_features: int
    d_hidden: int
    device: torch.device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch: ...

    def true_directions(self) -> torch.Tensor:
        """Unit directions, (inst, n_features, d_hidden)."""
        ...

    def gradeable(self) -> torch.Tensor:
        """Boolean (inst, n_features): features that have a direction to find."""
        ...


def _unit_rows(directions: torch.Tensor) -> torch.Tensor:
    return directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def random_directions(n_features: int, d_hidden: int, n_instances: int = 1, seed: int | None = 0,
                      device=None) -> torch.Tensor:
    """Random unit directions, uniform on the sphere: (inst, n_features, d_hidden)."""
    device = resolve_device(device)
    generator = make_generator(seed, device)
    return _unit_rows(torch.randn(n_instances, n_features, d_hidden, generator=generator, device=device))


class DictionarySource:
    """h = f D (+ Gaussian noise): features laid along fixed directions.

    Args:
        directions: (n_features, d_hidden), shared by all instances, or
            (inst, n_features, d_hidden). Used as given; their unit versions are the truth.
        dist: the feature distribution; its n_instances sets the source's.
        noise: standard deviation of isotropic Gaussian noise added in hidden space.
    """

    def __init__(self, directions: torch.Tensor, dist: FeatureDistribution, noise: float = 0.0):
        directions = torch.as_tensor(directions, dtype=torch.float32)
        if directions.ndim == 2:
            directions = directions.unsqueeze(0).expand(dist.n_instances, -1, -1)
        if directions.ndim != 3 or directions.shape[:2] != (dist.n_instances, dist.n_features):
            raise ValueError(
                f"directions has shape {tuple(directions.shape)}; expected ({dist.n_features}, d_hidden) or "
                f"({dist.n_instances}, {dist.n_features}, d_hidden) to match dist"
            )
        finite_tensor("directions", directions)
        self.noise = non_negative("noise", noise)
        self.dist = dist
        self.device = dist.device
        self.directions = directions.to(self.device).contiguous()
        self.n_instances, self.n_features, self.d_hidden = self.directions.shape

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        features = self.dist.sample(batch_size, generator)
        hidden = torch.einsum("bif,ifd->bid", features, self.directions)
        if self.noise > 0:
            hidden = hidden + self.noise * torch.randn(hidden.shape, generator=generator, device=self.device)
        return Batch(hidden, features)

    def true_directions(self) -> torch.Tensor:
        return _unit_rows(self.directions)

    def gradeable(self) -> torch.Tensor:
        """Every feature with a non-zero direction and a chance to fire."""
        return (self.directions.norm(dim=-1) > 0) & (self.dist.firing_prob > 0)


class ToyModelSource:
    """Hidden activations of a trained toy model on fresh samples of its features.

    Args:
        model: a trained `ToyModel`.
        dist: the feature distribution (same n_features and n_instances as the model).
        instances: optional index per source instance into the model's instances, e.g.
            [0, 0, 1, 1] to let two SAEs each read the same toy model. Default: one to one.
    """

    def __init__(self, model: ToyModel, dist: FeatureDistribution, instances=None):
        if (dist.n_instances, dist.n_features) != (model.n_instances, model.n_features):
            raise ValueError(
                f"dist has (n_instances, n_features)=({dist.n_instances}, {dist.n_features}) but the model has "
                f"({model.n_instances}, {model.n_features})"
            )
        self.model = model
        self.device = model.W.device
        self.dist = dist if dist.device == self.device else dist.to(self.device)
        if instances is None:
            instances = torch.arange(model.n_instances)
        self.instances = torch.as_tensor(instances, dtype=torch.long, device=self.device)
        if self.instances.ndim != 1 or len(self.instances) == 0 or self.instances.min() < 0 \
                or self.instances.max() >= model.n_instances:
            raise ValueError(f"instances must be a non-empty list of indices below {model.n_instances}, "
                             f"got {instances!r}")
        self.n_instances = len(self.instances)
        self.n_features = model.n_features
        self.d_hidden = model.d_hidden

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        features = self.dist.sample(batch_size, generator)
        hidden = self.model.hidden(features)
        return Batch(hidden[:, self.instances], features[:, self.instances])

    def true_directions(self) -> torch.Tensor:
        return self.model.feature_directions()[self.instances]

    def gradeable(self) -> torch.Tensor:
        """The features the toy model represents (||W_i|| >= 0.5): a dropped one has no direction."""
        return self.model.represented()[self.instances] & (self.dist.firing_prob[self.instances] > 0)

"""Activation sources: hidden activations paired with the truth that made them.

Every source yields `Batch(hidden, features)` with hidden (batch, inst, d_hidden) and
features (batch, inst, n_features), and knows the true unit directions of its features
in hidden space, (inst, n_features, d_hidden), and which features are gradeable.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

from .checks import finite_float, finite_tensor, non_negative, positive_int
from .devices import make_generator
from .truth.dictionaries import Dictionary, random_directions, unit_rows
from .truth.distribution import ActiveFeatures, FeatureDistribution
from .integer_sort import stable_argsort
from .toy.model import ToyModel

SNR_SAMPLES = 65_536  # samples behind the signal power that sets the noise for a stated SNR


class Batch(NamedTuple):
    """One draw from a source."""

    hidden: torch.Tensor
    """Hidden activations the SAE sees, (batch, inst, d_hidden)."""
    features: torch.Tensor
    """Ground-truth feature activations behind them, (batch, inst, n_features)."""


@runtime_checkable
class ActivationSource(Protocol):
    """What an SAE trainer and the evaluator need from a source.

    A source may also offer `sample_hidden(batch_size, generator)`, the activations alone;
    `train_sae` uses it when present (DictionarySource skips building dense features there).
    """

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


def _check_snr(snr) -> float:
    snr = finite_float("snr", snr)
    if snr <= 0:
        raise ValueError(f"snr must be > 0 (a power ratio; snr_db = 10 log10(snr)), got {snr!r}")
    return snr


def noise_std_for_snr(signal_power: torch.Tensor, d_hidden: int, snr) -> torch.Tensor:
    """σ of isotropic noise N(0, σ² I_d) whose power d σ² is `signal_power / snr`: (inst,) -> (inst,)."""
    return (signal_power / (d_hidden * _check_snr(snr))).sqrt()


def _mean_power(draw, n_samples: int, chunk: int = 8192) -> torch.Tensor:
    """E||s||² per instance over `n_samples` draws of `draw(batch) -> (batch, inst, d)`."""
    total, done = 0.0, 0
    while done < n_samples:
        size = min(chunk, n_samples - done)
        total = total + draw(size).pow(2).sum(-1).sum(0)
        done += size
    return total / n_samples


def hidden_from_active(active: ActiveFeatures, directions: torch.Tensor) -> torch.Tensor:
    """h = f D from the active features only: cost ∝ active features × d_hidden, not n_features × d_hidden.

    active: a batch in sparse form; directions: (inst, n_features, d_hidden). Returns (batch, inst, d_hidden).
    Each (sample, instance) row is a weighted bag of direction rows, which embedding_bag sums
    in one pass (4× faster on CPU than scattering the products with index_add).
    """
    batch, n_instances, n_features = active.shape
    rows = active.sample * n_instances + active.instance
    counts = torch.bincount(rows, minlength=batch * n_instances)
    table = directions.reshape(n_instances * n_features, -1)
    entries, weights = active.instance * n_features + active.feature, active.value.to(table.dtype)
    # embedding_bag wants each bag's entries together. The samplers' walks list them so already;
    # checking that would stall an accelerator's queue, so there they are always sorted.
    if rows.device.type != "cpu" or not bool((rows[1:] >= rows[:-1]).all()):
        order = stable_argsort(rows, batch * n_instances)
        entries, weights = entries[order], weights[order]
    hidden = torch.nn.functional.embedding_bag(entries, table, counts.cumsum(0) - counts, mode="sum",
                                               per_sample_weights=weights)
    return hidden.view(batch, n_instances, -1)


class DictionarySource:
    """h = f D (+ Gaussian noise): features laid along fixed directions.

    Args:
        directions: (n_features, d_hidden), shared by all instances, or
            (inst, n_features, d_hidden), or a `Dictionary` (from
            `toysuper.dictionaries`). Used as given; their unit versions are the truth.
        dist: the feature distribution; its n_instances sets the source's.
        noise: standard deviation σ of isotropic Gaussian noise added in hidden space.
        snr: instead of `noise`, the signal-to-noise ratio to achieve, as a power ratio
            SNR = E||f D||² / E||ε||² with ε ~ N(0, σ² I) (so E||ε||² = d_hidden σ²),
            per instance; in decibels that is 10 log10(SNR). σ is set from E||f D||²
            estimated on `snr_samples` draws of `dist` with a fixed seed (its relative
            error is about CV(||f D||²) / sqrt(snr_samples), well under 1% by default).
        snr_samples: how many samples estimate the signal power.

    Attributes:
        noise_std: σ of the added noise per instance, (inst,).
    """

    def __init__(self, directions: torch.Tensor, dist: FeatureDistribution, noise: float = 0.0, *, snr=None,
                 snr_samples: int = SNR_SAMPLES):
        if isinstance(directions, Dictionary):
            directions = directions.directions
        directions = torch.as_tensor(directions, dtype=torch.float32)
        if directions.ndim == 2:
            directions = directions.unsqueeze(0).expand(dist.n_instances, -1, -1)
        if directions.ndim != 3 or directions.shape[:2] != (dist.n_instances, dist.n_features):
            raise ValueError(
                f"directions has shape {tuple(directions.shape)}; expected ({dist.n_features}, d_hidden) or "
                f"({dist.n_instances}, {dist.n_features}, d_hidden) to match dist"
            )
        finite_tensor("directions", directions)
        zero = directions.norm(dim=-1) == 0
        if zero.any():
            instance, feature = zero.nonzero()[0].tolist()
            raise ValueError(f"directions has a zero row (feature {feature}, instance {instance}; {int(zero.sum())} "
                             f"in all): every feature needs a direction to lie along")
        self.dist = dist
        self.device = dist.device
        self.directions = directions.to(self.device).contiguous()
        self.n_instances, self.n_features, self.d_hidden = self.directions.shape
        self.noise = non_negative("noise", noise)
        self.snr = snr
        if snr is None:
            self.noise_std = torch.full((self.n_instances,), self.noise, device=self.device)
        else:
            if self.noise > 0:
                raise ValueError(f"give noise (a standard deviation) or snr, not both: noise={noise!r}, snr={snr!r}")
            _check_snr(snr)
            power = self.signal_power(positive_int("snr_samples", snr_samples))
            self.noise_std = noise_std_for_snr(power, self.d_hidden, snr)
        self._noisy = bool((self.noise_std > 0).any())

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        if self.dist.draws_sparse(batch_size):
            active = self.dist.sample_active(batch_size, generator)
            return Batch(self._noised(hidden_from_active(active, self.directions), generator), active.to_dense())
        features = self.dist.sample(batch_size, generator)
        hidden = torch.einsum("bif,ifd->bid", features, self.directions)
        return Batch(self._noised(hidden, generator), features)

    def sample_hidden(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`sample(...).hidden` without building the dense features (what training needs), (batch, inst, d_hidden).

        The same generator state gives the same activations as `sample`.
        """
        if self.dist.draws_sparse(batch_size):
            return self._noised(hidden_from_active(self.dist.sample_active(batch_size, generator), self.directions),
                                generator)
        return self.sample(batch_size, generator).hidden

    def _noised(self, hidden: torch.Tensor, generator) -> torch.Tensor:
        if not self._noisy:
            return hidden
        noise = torch.randn(hidden.shape, generator=generator, device=self.device)
        return hidden + self.noise_std[:, None] * noise

    @torch.no_grad()
    def signal_power(self, n_samples: int = SNR_SAMPLES, seed: int = 0) -> torch.Tensor:
        """E||f D||² per instance, (inst,), estimated on `n_samples` noiseless draws.

        Uses the sparse form of the draws (cost ∝ active features × d_hidden), so large
        dictionaries are cheap.
        """
        generator = make_generator(seed, self.device)

        return _mean_power(lambda size: hidden_from_active(self.dist.sample_active(size, generator), self.directions),
                           n_samples)

    def true_directions(self) -> torch.Tensor:
        return unit_rows(self.directions)

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
        snr: optional signal-to-noise ratio of Gaussian noise added to the hidden
            activations, defined as for `DictionarySource` with the signal the model's
            hidden vector h: SNR = E||h||² / E||ε||², ε ~ N(0, σ² I), per source instance.
        snr_samples: how many samples estimate E||h||².
    """

    def __init__(self, model: ToyModel, dist: FeatureDistribution, instances=None, *, snr=None,
                 snr_samples: int = SNR_SAMPLES):
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
        self.snr = snr
        self.noise_std = None  # σ per source instance, (inst,), when snr is given
        if snr is not None:
            _check_snr(snr)
            power = self.signal_power(positive_int("snr_samples", snr_samples))
            self.noise_std = noise_std_for_snr(power, self.d_hidden, snr)

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        features = self.dist.sample(batch_size, generator)
        hidden = self.model.hidden(features)[:, self.instances]
        if self.noise_std is not None:
            hidden = hidden + self.noise_std[:, None] * torch.randn(hidden.shape, generator=generator,
                                                                     device=self.device)
        return Batch(hidden, features[:, self.instances])

    @torch.no_grad()
    def signal_power(self, n_samples: int = SNR_SAMPLES, seed: int = 0) -> torch.Tensor:
        """E||h||² per source instance, (inst,), estimated on `n_samples` noiseless draws."""
        generator = make_generator(seed, self.device)
        return _mean_power(lambda size: self.model.hidden(self.dist.sample(size, generator))[:, self.instances],
                           n_samples)

    def true_directions(self) -> torch.Tensor:
        return self.model.feature_directions()[self.instances]

    def gradeable(self) -> torch.Tensor:
        """The features the toy model represents (||W_i|| >= 0.5): a dropped one has no direction."""
        return self.model.represented()[self.instances] & (self.dist.firing_prob[self.instances] > 0)

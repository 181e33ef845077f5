"""How strongly a feature fires once it fires: the magnitude laws.

Elhage et al. 2022 draw the value of a firing feature from U[0, 1] (`Uniform`, the
default). Real features have other shapes: a fixed value (`Constant`, a binary feature),
a heavy tail (`Exponential`), or |N(μ, σ²)| (`FoldedNormal`). Each parameter may be a
number, one per feature `(n_features,)`, one per instance `(n_instances, 1)` or
`(n_instances, n_features)`. A law is a small spec; `FeatureDistribution` calls
`resolve` to broadcast it to (inst, n_features) and then draws only at the positions of
the features that fire.
"""

from __future__ import annotations

import math

import torch

from .shapes import per_instance_per_feature


class Magnitude:
    """Base class: a law with named parameters, each broadcast to (inst, n_features) by `resolve`."""

    names: tuple[str, ...] = ()

    def __init__(self, **params):
        self.params = params

    def resolve(self, n_instances: int, n_features: int, device) -> "Magnitude":
        """A copy whose parameters are (inst, n_features) float32 tensors on `device`, validated."""
        resolved = type(self).__new__(type(self))
        resolved.params = {name: per_instance_per_feature(name, value, n_instances, n_features, device)
                           for name, value in self.params.items()}
        for name, value in resolved.params.items():
            if not torch.isfinite(value).all():
                raise ValueError(f"{type(self).__name__} {name} must be finite, got {self.params[name]!r}")
        resolved._validate()
        # a parameter with one value everywhere needs no lookup per firing entry (sample_at)
        resolved._constant = [bool((value == value.flatten()[0]).all()) for value in resolved.params.values()]
        return resolved

    def sample_at(self, instance: torch.Tensor, feature: torch.Tensor, generator=None) -> torch.Tensor:
        """Magnitudes for the firing (instance, feature) pairs: two (k,) index tensors -> (k,)."""
        return self._draw([value.flatten()[0].expand(instance.shape) if constant else value[instance, feature]
                           for value, constant in zip(self.params.values(), self._constant)], generator)

    def sample_dense(self, batch_size: int, generator=None) -> torch.Tensor:
        """A magnitude for every (sample, instance, feature): (batch, inst, n_features)."""
        params = [value.expand(batch_size, *value.shape) for value in self.params.values()]
        return self._draw(params, generator)

    def from_uniform(self, v: torch.Tensor) -> torch.Tensor | None:
        """Magnitudes from U[0, 1) numbers v (batch, inst, n_features) by the inverse CDF, or None
        for a law without a cheap one. Lets a dense draw use one uniform per entry for both
        firing and magnitude (features.FeatureDistribution._sample_dense)."""
        return None

    def mean(self) -> torch.Tensor:
        """E[magnitude] per feature, (inst, n_features)."""
        raise NotImplementedError

    def second_moment(self) -> torch.Tensor:
        """E[magnitude²] per feature, (inst, n_features)."""
        raise NotImplementedError

    def _validate(self) -> None:
        pass

    def _draw(self, params: list[torch.Tensor], generator) -> torch.Tensor:
        raise NotImplementedError

    def _require(self, name: str, ok: torch.Tensor, rule: str) -> None:
        if not ok.all():
            bad = self.params[name][~ok].flatten()[0].item()
            raise ValueError(f"{type(self).__name__} {name} must be {rule}, got {bad!r}")

    def __repr__(self) -> str:
        def show(value):
            value = torch.as_tensor(value)
            first = value.flatten()[0]
            return f"{first.item():g}" if (value == first).all() else "per feature"
        return f"{type(self).__name__}({', '.join(f'{k}={show(v)}' for k, v in self.params.items())})"


class Uniform(Magnitude):
    """U[low, high], 0 <= low <= high; U[0, 1] by default (Elhage et al. 2022)."""

    def __init__(self, low=0.0, high=1.0):
        super().__init__(low=low, high=high)

    def _validate(self):
        low, high = self.params["low"], self.params["high"]
        self._require("low", low >= 0, ">= 0")
        self._require("high", high >= low, ">= low")
        self._standard = bool((low == 0).all() and (high == 1).all())

    def _draw(self, params, generator):
        low, high = params
        u = torch.rand(low.shape, generator=generator, device=low.device)
        # U[0, 1], the default, skips the affine map: training loops draw it every step
        return u if self._standard else low + (high - low) * u

    def from_uniform(self, v):
        return v if self._standard else self.params["low"] + (self.params["high"] - self.params["low"]) * v

    def mean(self):
        return (self.params["low"] + self.params["high"]) / 2

    def second_moment(self):
        low, high = self.params["low"], self.params["high"]
        return (low * low + low * high + high * high) / 3


class Constant(Magnitude):
    """Always `value` > 0: a binary feature scaled by `value`."""

    def __init__(self, value=1.0):
        super().__init__(value=value)

    def _validate(self):
        self._require("value", self.params["value"] > 0, "> 0")

    def _draw(self, params, generator):
        return params[0].clone()

    def mean(self):
        return self.params["value"]

    def second_moment(self):
        return self.params["value"] ** 2


class Exponential(Magnitude):
    """Exponential with the given `mean` > 0: most values small, a long tail of large ones."""

    def __init__(self, mean=1.0):
        super().__init__(mean=mean)

    def _validate(self):
        self._require("mean", self.params["mean"] > 0, "> 0")

    def _draw(self, params, generator):
        (mean,) = params
        return mean * torch.empty(mean.shape, device=mean.device).exponential_(generator=generator)

    def from_uniform(self, v):
        return -self.params["mean"] * torch.log1p(-v)

    def mean(self):
        return self.params["mean"]

    def second_moment(self):
        return 2 * self.params["mean"] ** 2


class FoldedNormal(Magnitude):
    """|X| with X ~ N(mean, std²), std > 0: magnitudes clustered around |mean| (any real mean)."""

    def __init__(self, mean=1.0, std=0.25):
        super().__init__(mean=mean, std=std)

    def _validate(self):
        self._require("std", self.params["std"] > 0, "> 0")

    def _draw(self, params, generator):
        mean, std = params
        return (mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)).abs()

    def mean(self):
        mu, sigma = self.params["mean"], self.params["std"]
        # E|X| = σ √(2/π) exp(-μ²/2σ²) + μ (1 - 2 Φ(-μ/σ))  (Leone et al. 1961)
        phi = 0.5 * torch.erfc(mu / (sigma * math.sqrt(2)))
        return sigma * math.sqrt(2 / math.pi) * torch.exp(-mu ** 2 / (2 * sigma ** 2)) + mu * (1 - 2 * phi)

    def second_moment(self):
        return self.params["mean"] ** 2 + self.params["std"] ** 2


MAGNITUDES = {"uniform": Uniform, "constant": Constant, "exponential": Exponential, "folded_normal": FoldedNormal}
"""Named magnitude laws, for configs: e.g. MAGNITUDES["exponential"](mean=0.5)."""

"""How strongly a feature fires once it fires: the magnitude laws.

Elhage et al. 2022 draw a firing feature's value from U[0, 1] (`Uniform`, the default); real features
have other shapes. Each parameter may be a number, `(n_features,)`, `(n_instances, 1)` or
`(n_instances, n_features)`. Every law is drawn by its inverse CDF (`quantile`) from a uniform v, so a
draw is uniforms followed by a pure transform (a dense draw reuses the uniform that decided the firing).
"""

from __future__ import annotations

import math

import torch

from .shapes import per_instance_per_feature


class Magnitude:
    """Base class: a law with named parameters, each broadcast to (inst, n_features) by `resolve`."""

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
        # a parameter with one value everywhere needs no lookup per entry (`gather`): kept as a 0-d tensor
        resolved._constant = [value.flatten()[0].clone() if bool((value == value.flatten()[0]).all()) else None
                              for value in resolved.params.values()]
        return resolved

    def gather(self, feature: torch.Tensor | None, rows: torch.Tensor) -> list[torch.Tensor]:
        """Each parameter at (instance rows[r], feature[r, k]), (R, k) (feature None: the rows' whole
        tables); one with one value everywhere as a 0-d tensor."""
        out = []
        for value, constant in zip(self.params.values(), self._constant):
            if constant is None:
                value = value.index_select(0, rows)
                out.append(value if feature is None else value.gather(1, feature))
            else:
                out.append(constant)
        return out

    zero_at_zero = False
    """Whether quantile(0) = 0 everywhere (then a draw need not mask the values of silent entries)."""

    # each law defines quantile(v, params): the inverse CDF at v in [0, 1], `params` broadcast against v;
    # mean() and second_moment(): E[magnitude] and E[magnitude²], (inst, n_features); and _validate()

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


def _ndtri(p: torch.Tensor) -> torch.Tensor:
    """Φ⁻¹(p) = √2 erf⁻¹(2p - 1), float32 from float64: faster on CPUs than torch's ndtri, and
    accurate (2p - 1 in float64 keeps p's digits down to p = 2^-26)."""
    return torch.erfinv(p.double().mul_(2).sub_(1)).mul_(math.sqrt(2)).float()


class Uniform(Magnitude):
    """U[low, high], 0 <= low <= high; U[0, 1] by default (Elhage et al. 2022)."""

    def __init__(self, low=0.0, high=1.0):
        super().__init__(low=low, high=high)

    def _validate(self):
        low, high = self.params["low"], self.params["high"]
        self._require("low", low >= 0, ">= 0")
        self._require("high", high >= low, ">= low")
        self._standard = bool((low == 0).all() and (high == 1).all())
        self.zero_at_zero = bool((low == 0).all())

    def quantile(self, v, params):
        low, high = params
        return v if self._standard else low + (high - low) * v  # U[0, 1] skips the affine map

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

    def quantile(self, v, params):
        return torch.ones_like(v) * params[0]

    def mean(self):
        return self.params["value"]

    def second_moment(self):
        return self.params["value"] ** 2


class Exponential(Magnitude):
    """Exponential with the given `mean` > 0: most values small, a long tail of large ones."""

    zero_at_zero = True

    def __init__(self, mean=1.0):
        super().__init__(mean=mean)

    def _validate(self):
        self._require("mean", self.params["mean"] > 0, "> 0")

    def quantile(self, v, params):
        return -params[0] * torch.log1p(-v.clamp(max=1 - 2.0 ** -24))  # v = 1 (float rounding) stays finite

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

    def quantile(self, v, params):
        mean, std = params
        # v kept inside (0, 1) so the tails stay finite (|z| <= 5.4 on float32's grid)
        return (mean + std * _ndtri(v.clamp(2.0 ** -26, 1 - 2.0 ** -24))).abs()

    def mean(self):
        mu, sigma = self.params["mean"], self.params["std"]
        # E|X| = σ √(2/π) exp(-μ²/2σ²) + μ (1 - 2 Φ(-μ/σ))  (Leone et al. 1961)
        phi = 0.5 * torch.erfc(mu / (sigma * math.sqrt(2)))
        return sigma * math.sqrt(2 / math.pi) * torch.exp(-mu ** 2 / (2 * sigma ** 2)) + mu * (1 - 2 * phi)

    def second_moment(self):
        return self.params["mean"] ** 2 + self.params["std"] ** 2


class TruncatedNormal(Magnitude):
    """X ~ N(mean, std²) conditioned on X > 0; std > 0, mean > -5 std.

    SynthSAEBench (Chanin & Garriga-Alonso 2026) gives a firing feature ReLU(N(μ, σ²)), a value
    that is 0, a silent feature, with probability Φ(-μ/σ). Its non-zero values follow this law;
    `toysuper.worlds` folds the silent draws into the firing rate, Φ(μ/σ) p.
    """

    def __init__(self, mean=1.0, std=0.25):
        super().__init__(mean=mean, std=std)

    def _validate(self):
        self._require("std", self.params["std"] > 0, "> 0")
        self._require("mean", self.params["mean"] > -5 * self.params["std"], "> -5 std (the law needs mass above 0)")

    def quantile(self, v, params):
        mean, std = params
        above = torch.special.ndtr(mean / std)  # P(N(μ, σ²) > 0)
        # Φ⁻¹(1 - b (1 - v)) = -Φ⁻¹(b (1 - v)): the small argument keeps float32 accurate in both tails
        return _ndtri((1 - v).clamp_min_(2.0 ** -24).mul_(above)).mul_(-std).add_(mean).clamp_min_(0)

    def mean(self):
        mu, sigma = self.params["mean"], self.params["std"]
        return mu + sigma * self._hazard()

    def second_moment(self):
        mu, sigma = self.params["mean"], self.params["std"]
        return mu ** 2 + sigma ** 2 + mu * sigma * self._hazard()  # E[Z²|Z > -α] = 1 - αλ with λ below

    def _hazard(self) -> torch.Tensor:
        """λ = φ(α) / Φ(α), α = μ/σ: E[Z | Z > -α] for a standard normal Z."""
        alpha = (self.params["mean"] / self.params["std"]).double()
        density = torch.exp(-alpha ** 2 / 2) / math.sqrt(2 * math.pi)
        return (density / torch.special.ndtr(alpha)).float()


MAGNITUDES = {"uniform": Uniform, "constant": Constant, "exponential": Exponential, "folded_normal": FoldedNormal,
              "truncated_normal": TruncatedNormal}
"""Named magnitude laws, for configs: e.g. MAGNITUDES["exponential"](mean=0.5)."""

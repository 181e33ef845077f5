"""Ground-truth sparse features: which fire, how strongly, and how much each matters.

Elhage et al. 2022 ("Toy Models of Superposition"): feature i is 0 with probability
S (the sparsity) and otherwise drawn from U[0, 1]; it carries an importance I_i that
weights its reconstruction error. Here the firing probability p = 1 - S may be one
number, one per feature, or one per instance, so sparsity can be a sweep axis that
trains as the instances of a single batched model.
"""

from __future__ import annotations

import torch

from .checks import as_tensor, positive_int, probability_tensor
from .devices import resolve_device


def _per_instance_per_feature(name: str, value, n_instances: int, n_features: int, device) -> torch.Tensor:
    """Broadcast `value` to (inst, n_features), accepting the documented shapes only.

    Accepted: a number; (n_features,) one per feature; (n_instances, 1) one per instance;
    (n_instances, n_features) one per instance and feature.
    """
    tensor = as_tensor(name, value, device)
    shape = tuple(tensor.shape)
    allowed = {(), (n_features,), (n_instances, 1), (1, n_features), (n_instances, n_features)}
    if shape not in allowed:
        raise ValueError(
            f"{name} has shape {shape}; expected a number, ({n_features},) per feature, "
            f"({n_instances}, 1) per instance or ({n_instances}, {n_features}) "
            f"(n_instances={n_instances}, n_features={n_features})"
        )
    return tensor.expand(n_instances, n_features).contiguous()


class FeatureDistribution:
    """Independent sparse features with an instances axis.

    Args:
        n_features: number of ground-truth features.
        firing_prob: probability that a feature is non-zero: a number, one per feature
            `(n_features,)`, one per instance `(n_instances, 1)`, or `(n_instances, n_features)`.
        sparsity: the same, given as S = 1 - firing_prob (pass exactly one of the two).
        n_instances: number of independent instances sampled side by side.
        importance: weight I_i of each feature's reconstruction error (same shapes as
            firing_prob); 1 by default.
        device: where samples are generated; CUDA when present by default.

    Magnitudes of firing features are U[0, 1].
    """

    def __init__(
        self,
        n_features: int,
        firing_prob=None,
        *,
        sparsity=None,
        n_instances: int = 1,
        importance=None,
        device=None,
    ):
        self.n_features = positive_int("n_features", n_features)
        self.n_instances = positive_int("n_instances", n_instances)
        self.device = resolve_device(device)
        if (firing_prob is None) == (sparsity is None):
            raise ValueError(
                f"give exactly one of firing_prob or sparsity, got firing_prob={firing_prob!r}, sparsity={sparsity!r}"
            )
        if sparsity is not None:
            probability_tensor("sparsity", as_tensor("sparsity", sparsity, self.device))
            firing_prob = 1.0 - as_tensor("sparsity", sparsity, self.device)
        else:
            probability_tensor("firing_prob", as_tensor("firing_prob", firing_prob, self.device))
        shape_args = (self.n_instances, self.n_features, self.device)
        self.firing_prob = _per_instance_per_feature("firing_prob", firing_prob, *shape_args)
        self.importance = _per_instance_per_feature("importance", 1.0 if importance is None else importance, *shape_args)
        if (self.importance < 0).any() or not torch.isfinite(self.importance).all():
            raise ValueError(f"importance must be finite and >= 0, got {importance!r}")

    @classmethod
    def sparsity_sweep(cls, n_features: int, sparsities, *, importance=None, device=None) -> "FeatureDistribution":
        """One instance per sparsity value: `sparsities` is a sequence of S in [0, 1]."""
        values = torch.as_tensor(sparsities, dtype=torch.float32).reshape(-1, 1)
        return cls(n_features, sparsity=values, n_instances=len(values), importance=importance, device=device)

    @property
    def sparsity(self) -> torch.Tensor:
        """S = 1 - firing probability, shape (inst, n_features)."""
        return 1.0 - self.firing_prob

    def expected_l0(self) -> torch.Tensor:
        """Mean number of active features per sample, shape (inst,)."""
        return self.firing_prob.sum(-1)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw feature activations, shape (batch, inst, n_features), on `self.device`."""
        batch_size = positive_int("batch_size", batch_size)
        shape = (batch_size, self.n_instances, self.n_features)
        fires = torch.rand(shape, generator=generator, device=self.device) < self.firing_prob
        magnitudes = torch.rand(shape, generator=generator, device=self.device)
        return magnitudes * fires

    def to(self, device) -> "FeatureDistribution":
        """A copy of this distribution that samples on `device`."""
        return FeatureDistribution(
            self.n_features,
            self.firing_prob,
            n_instances=self.n_instances,
            importance=self.importance,
            device=device,
        )

    def __repr__(self) -> str:
        p = self.firing_prob
        return (
            f"FeatureDistribution(n_features={self.n_features}, n_instances={self.n_instances}, "
            f"firing_prob in [{p.min().item():.4g}, {p.max().item():.4g}], device={self.device})"
        )

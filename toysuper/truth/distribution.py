"""Ground-truth sparse features: which fire, how strongly, and how much each matters.

Elhage et al. 2022 ("Toy Models of Superposition"): feature i is 0 with probability
S (the sparsity) and otherwise drawn from U[0, 1]; it carries an importance I_i that
weights its reconstruction error. Here the firing probability p = 1 - S may be one
number, one per feature, one per instance, or a power law (`Zipf`), so sparsity can be
a sweep axis that trains as the instances of a single batched model. Real features are
not independent either; the distribution composes:

- `magnitude=`: how strongly a firing feature fires (`toysuper.magnitudes`);
- `correlated_groups=` / `exclusive_groups=`: features that fire together / never
  together (`toysuper.groups`);
- `hierarchy=`: children that fire only inside their parent (`toysuper.hierarchy`).

None of these changes a feature's marginal firing probability `firing_prob` (except a
hierarchy given `child_prob=`, which sets the children's rates; `firing_prob` then shows
the result). Sparse distributions are drawn by walking geometric gaps
(`toysuper.sparse_sampling`): the cost grows with the number of active features, not with
batch × n_features.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import as_tensor, positive_int, probability_tensor
from ..devices import resolve_device
from ..float_masks import positive_
from .groups import CorrelatedGroups, ExclusiveGroups
from .hierarchy import Hierarchy
from .magnitudes import Magnitude, Uniform
from .shapes import per_instance_per_feature
from .sparse_sampling import BernoulliColumns, expand_segments, joined, pick_in_segments, split_index

_per_instance_per_feature = per_instance_per_feature  # the name this module used to define

SAMPLING = ("auto", "sparse", "dense")


class ActiveFeatures(NamedTuple):
    """The firing features of a batch in sparse form: one entry per active (sample, instance, feature),
    in no particular order, each at most once."""

    sample: torch.Tensor
    """(k,) batch index."""
    instance: torch.Tensor
    """(k,) instance index."""
    feature: torch.Tensor
    """(k,) feature index."""
    value: torch.Tensor
    """(k,) magnitude, float32."""
    shape: tuple[int, int, int]
    """(batch, inst, n_features) of the dense form."""

    def to_dense(self) -> torch.Tensor:
        """The dense activations, (batch, inst, n_features), stored instance-major.

        The tensor is a (batch, inst, n) view of an (inst, batch, n) one, so batched models read each
        instance's (batch, n) block as one contiguous matrix: the 64-instance toy model's forward and
        backward passes take about 25% less time than on a batch-major tensor (same numbers).
        """
        batch, n_instances, n_features = self.shape
        out = torch.zeros(n_instances, batch, n_features, device=self.value.device)
        flat = (self.instance * batch + self.sample) * n_features + self.feature
        out.view(-1).scatter_(0, flat, self.value)  # positions are unique, so scatter is exact (and fast)
        return out.transpose(0, 1)


class FeatureDistribution:
    """Sparse ground-truth features with an instances axis.

    Args:
        n_features: number of ground-truth features.
        firing_prob: each feature's marginal probability of being non-zero: a number, one
            per feature `(n_features,)`, one per instance `(n_instances, 1)`,
            `(n_instances, n_features)`, or a law such as `Zipf(exponent=1.0, l0=30)`
            (feature 0 most frequent, expected L0 = 30).
        sparsity: the same, given as S = 1 - firing_prob (pass exactly one of the two).
        n_instances: number of independent instances sampled side by side.
        importance: weight I_i of each feature's reconstruction error (same shapes as
            firing_prob); 1 by default.
        magnitude: the law of a firing feature's value, `Uniform()` (U[0, 1]) by default;
            see `toysuper.magnitudes`.
        correlated_groups: a `CorrelatedGroups`: features that tend to fire together.
        exclusive_groups: an `ExclusiveGroups` (or a list of lists of feature indices):
            at most one feature of a group fires.
        hierarchy: a `Hierarchy` (or {parent: [children]}): a child fires only when its
            parent fires. A feature may be in one group at most; a child in none.
        sampling: "auto" (default), "sparse" or "dense". Sparse walks geometric gaps and
            costs about the number of active features; dense draws one uniform per
            (sample, instance, feature) and wins when many features fire or the batch is
            small. "auto" draws dense a distribution without groups or hierarchy when
            that is expected to cost less (`toysuper.sparse_sampling.BernoulliColumns.cost`:
            on 2 CPU threads, above about 25% firing when all features share one rate,
            8% otherwise). Both give the same distribution, not the same numbers.
        device: where samples are generated; CUDA when present by default.

    Attributes:
        firing_prob: (inst, n_features) marginal firing probability of every feature
            (for hierarchy children too).
        importance: (inst, n_features).
        magnitude: the magnitude law, its parameters broadcast to (inst, n_features).
        parent: (n_features,) long, each feature's parent in the hierarchy, -1 for roots.
        hierarchy, correlated_groups, exclusive_groups: the structure objects, or None.
    """

    def __init__(
        self,
        n_features: int,
        firing_prob=None,
        *,
        sparsity=None,
        n_instances: int = 1,
        importance=None,
        magnitude: Magnitude | None = None,
        correlated_groups: CorrelatedGroups | None = None,
        exclusive_groups=None,
        hierarchy=None,
        sampling: str = "auto",
        device=None,
    ):
        self.n_features = positive_int("n_features", n_features)
        self.n_instances = positive_int("n_instances", n_instances)
        self.device = resolve_device(device)
        if (firing_prob is None) == (sparsity is None):
            raise ValueError(
                f"give exactly one of firing_prob or sparsity, got firing_prob={firing_prob!r}, sparsity={sparsity!r}"
            )
        shape_args = (self.n_instances, self.n_features, self.device)
        if sparsity is not None:
            probability_tensor("sparsity", as_tensor("sparsity", sparsity, self.device))
            firing_prob = 1.0 - as_tensor("sparsity", sparsity, self.device)
        elif hasattr(firing_prob, "resolve"):
            firing_prob = firing_prob.resolve(*shape_args)
        else:
            probability_tensor("firing_prob", as_tensor("firing_prob", firing_prob, self.device))
        given = per_instance_per_feature("firing_prob", firing_prob, *shape_args)
        self.importance = per_instance_per_feature("importance", 1.0 if importance is None else importance, *shape_args)
        if (self.importance < 0).any() or not torch.isfinite(self.importance).all():
            raise ValueError(f"importance must be finite and >= 0, got {importance!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        self.sampling = sampling
        magnitude = Uniform() if magnitude is None else magnitude
        if not isinstance(magnitude, Magnitude):
            raise TypeError(f"magnitude must be a toysuper.magnitudes law such as Uniform(), got {magnitude!r}")
        self._magnitude_spec = magnitude
        self.magnitude = magnitude.resolve(*shape_args)
        self.correlated_groups = _as_structure("correlated_groups", correlated_groups, CorrelatedGroups, None)
        self.exclusive_groups = _as_structure("exclusive_groups", exclusive_groups, ExclusiveGroups, ExclusiveGroups)
        self.hierarchy = _as_structure("hierarchy", hierarchy, Hierarchy, Hierarchy)
        self._given_prob = given
        self.firing_prob = given
        self._check_structure()
        if self.hierarchy is not None:
            self.firing_prob, self._child_cond = self.hierarchy.resolve(given)
        self._build_units()
        self._inverse_rate = self._can_fire = None  # for dense draws, made on the first one

    @classmethod
    def sparsity_sweep(cls, n_features: int, sparsities, *, importance=None, device=None,
                       **kwargs) -> "FeatureDistribution":
        """One instance per sparsity value: `sparsities` is a sequence of S in [0, 1].

        Other keyword arguments (magnitude, groups, hierarchy, sampling) pass through.
        """
        values = as_tensor("sparsities", sparsities, resolve_device(device)).reshape(-1, 1)
        if len(values) == 0:
            raise ValueError(f"sparsities must hold at least one value (one instance each), got {sparsities!r}")
        return cls(n_features, sparsity=values, n_instances=len(values), importance=importance, device=device,
                   **kwargs)

    @property
    def sparsity(self) -> torch.Tensor:
        """S = 1 - firing probability, shape (inst, n_features)."""
        return 1.0 - self.firing_prob

    @property
    def parent(self) -> torch.Tensor:
        """Parent of each feature in the hierarchy, -1 for roots: (n_features,) long."""
        if self.hierarchy is None:
            return torch.full((self.n_features,), -1, dtype=torch.long, device=self.device)
        return self.hierarchy.parent(self.n_features, self.device)

    @property
    def structured(self) -> bool:
        """Whether any feature's firing depends on another's (groups or hierarchy)."""
        return any(s is not None for s in (self.correlated_groups, self.exclusive_groups, self.hierarchy))

    def expected_l0(self) -> torch.Tensor:
        """Mean number of active features per sample, shape (inst,)."""
        return self.firing_prob.sum(-1)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw feature activations, shape (batch, inst, n_features), on `self.device`."""
        batch_size = positive_int("batch_size", batch_size)
        if self._draws_dense(batch_size):
            return self._sample_dense(batch_size, generator)
        return self.sample_active(batch_size, generator).to_dense()

    def sample_active(self, batch_size: int, generator: torch.Generator | None = None) -> ActiveFeatures:
        """Draw a batch in sparse form: the (sample, instance, feature, value) of every active feature."""
        batch_size = positive_int("batch_size", batch_size)
        shape = (batch_size, self.n_instances, self.n_features)
        if self._draws_dense(batch_size):
            dense = self._sample_dense(batch_size, generator)
            sample, instance, feature = dense.nonzero(as_tuple=True)
            return ActiveFeatures(sample, instance, feature, dense[sample, instance, feature], shape)
        sample, instance, feature = self._active(batch_size, generator)
        value = self.magnitude.sample_at(instance, feature, generator)
        return ActiveFeatures(sample, instance, feature, value, shape)

    def to(self, device) -> "FeatureDistribution":
        """A copy of this distribution that samples on `device`."""
        return FeatureDistribution(
            self.n_features,
            self._given_prob,
            n_instances=self.n_instances,
            importance=self.importance,
            magnitude=self._magnitude_spec,
            correlated_groups=self.correlated_groups,
            exclusive_groups=self.exclusive_groups,
            hierarchy=self.hierarchy,
            sampling=self.sampling,
            device=device,
        )

    def __repr__(self) -> str:
        p = self.firing_prob
        parts = [f"n_features={self.n_features}", f"n_instances={self.n_instances}",
                 f"firing_prob in [{p.min().item():.4g}, {p.max().item():.4g}]", f"magnitude={self.magnitude!r}"]
        parts += [repr(s) for s in (self.correlated_groups, self.exclusive_groups, self.hierarchy) if s is not None]
        return f"FeatureDistribution({', '.join(parts)}, device={self.device})"

    # ---- sampling -------------------------------------------------------------------

    def draws_sparse(self, batch_size: int) -> bool:
        """Whether `sample(batch_size)` draws the sparse form first (then cheaper consumers can skip the dense one)."""
        return not self._draws_dense(batch_size)

    def _draws_dense(self, batch_size: int) -> bool:
        """One uniform per entry: asked for, or (on "auto") expected to cost less than walking the
        hits, for plain independent features (a structure needs the walk)."""
        if self.structured or self.sampling == "sparse":
            return False
        return self.sampling == "dense" or batch_size * self.firing_prob.numel() <= self._units.cost(batch_size)

    def _sample_dense(self, batch_size: int, generator) -> torch.Tensor:
        inverse_rate, can_fire = self._dense_rates()
        # A feature fires when u < p, and given that, v = u / p is again uniform on [0, 1): one draw
        # decides both firing and magnitude (half the random numbers; this CPU draws them serially).
        v = torch.rand(self.n_instances, batch_size, self.n_features, generator=generator, device=self.device)
        v = v.transpose(0, 1).mul_(inverse_rate)  # stored instance-major, as ActiveFeatures.to_dense explains
        fires = positive_(1 - v)  # 1 where v < 1
        if can_fire is not None:
            fires.mul_(can_fire)
        magnitude = self.magnitude.from_uniform(v.mul_(fires))  # v · fires keeps the inverse CDF finite
        if magnitude is None:
            return self.magnitude.sample_dense(batch_size, generator).mul_(fires)
        return magnitude.mul_(fires)

    def _dense_rates(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """1/p per (inst, feature), finite (2^100) where p = 0, and then a 0/1 mask of p > 0 (else None)."""
        if self._inverse_rate is None:
            p = self.firing_prob
            self._inverse_rate = torch.where(p > 0, 1 / p.clamp_min(2.0 ** -100), 2.0 ** 100)
            self._can_fire = (p > 0).float() if bool((p == 0).any()) else None
        return self._inverse_rate, self._can_fire

    def _check_structure(self) -> None:
        n = self.n_features
        owner: dict[int, str] = {}
        for structure in (self.correlated_groups, self.exclusive_groups):
            if structure is None:
                continue
            structure.check(n)
            for f in structure.features:
                if f in owner:
                    raise ValueError(f"feature {f} is in both {owner[f]} and {structure.kind}; a feature may be in "
                                     f"one group at most")
                owner[f] = structure.kind
        if self.hierarchy is not None:
            self.hierarchy.check(n)
            for f in self.hierarchy.children:
                if f in owner:
                    raise ValueError(f"feature {f} is a hierarchy child and in {owner[f]}; a child fires only through "
                                     f"its parent, so it cannot be in a group (its parent can)")

    def _build_units(self) -> None:
        """Lay out the independent 'units' whose Bernoulli draws decide everything else.

        Units, in column order: single features (roots outside exclusive groups, firing on
        their own), the shared events of correlated groups, and exclusive groups. Their
        rates form `_unit_rates` (inst, K); hierarchy children hang off the features.
        """
        device, n = self.device, self.n_features
        exclusive = set(self.exclusive_groups.features) if self.exclusive_groups else set()
        children = set(self.hierarchy.children) if self.hierarchy else set()
        singles = [f for f in range(n) if f not in exclusive and f not in children]
        self._singles = torch.tensor(singles, dtype=torch.long, device=device)
        rates = [self.firing_prob[:, self._singles].double()]
        self._corr = None
        if self.correlated_groups is not None:
            ptr, members = self.correlated_groups.csr(device)
            shared, own = self.correlated_groups.rates(self.firing_prob)
            column = torch.full((n,), -1, dtype=torch.long, device=device)
            column[self._singles] = torch.arange(len(singles), device=device)
            rates[0][:, column[members]] = own
            group_of = torch.full((n,), -1, dtype=torch.long, device=device)
            group_of[members] = torch.repeat_interleave(torch.arange(len(ptr) - 1, device=device), ptr.diff())
            self._corr = (ptr, members, group_of)
            rates.append(shared)
        self._excl = None
        if self.exclusive_groups is not None:
            ptr, members = self.exclusive_groups.csr(device)
            total, share = self.exclusive_groups.rates(self.firing_prob)
            self._excl = (ptr, members, share)
            rates.append(total)
        self._tree = None
        if self.hierarchy is not None:
            ptr, items = self.hierarchy.csr(n, device)
            self._tree = (ptr, items, self._child_cond, ptr.diff() > 0)
        self._unit_rates = torch.cat(rates, dim=1)
        self._units = BernoulliColumns(self._unit_rates, sparse=self.sampling != "dense")

    def _active(self, batch_size: int, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sample, instance, feature) of every active feature, each at most once."""
        n_units = self._unit_rates.shape[1]
        unit, sample = self._units.hits(batch_size, generator)
        if self.n_instances == 1:  # unit = instance · n_units + unit: nothing to split
            instance = torch.zeros_like(unit)
        else:
            instance, unit = split_index(unit, n_units, self.n_instances * n_units)
        n_singles = len(self._singles)
        if n_singles == n_units:  # no groups: every unit is a feature firing on its own
            # and without exclusive groups or a hierarchy, unit j is feature j
            found = [(sample, instance, unit if n_singles == self.n_features else self._singles[unit])]
        else:
            single = unit < n_singles
            found = [(sample[single], instance[single], self._singles[unit[single]])]
        offset = n_singles
        if self._corr is not None:
            ptr, members, group_of = self._corr
            n_groups = len(ptr) - 1
            shared = (unit >= offset) & (unit < offset + n_groups)
            s, i, g = sample[shared], instance[shared], unit[shared] - offset
            # a member's own firing counts only where its group's shared event did not fire
            # (the model is "shared event, else each on its own"), so nothing fires twice
            fired = torch.zeros(batch_size, self.n_instances, n_groups, dtype=torch.bool, device=self.device)
            fired[s, i, g] = True
            s0, i0, f0 = found[0]
            g0 = group_of[f0]
            own = g0 >= 0
            keep = ~own
            keep[own] = ~fired[s0[own], i0[own], g0[own]]
            found[0] = (s0[keep], i0[keep], f0[keep])
            event, item = expand_segments(g, ptr)
            found.append((s[event], i[event], members[item]))
            offset += n_groups
        if self._excl is not None:
            ptr, members, share = self._excl
            chosen = unit >= offset
            s, i, g = sample[chosen], instance[chosen], unit[chosen] - offset
            event, item = pick_in_segments(i, g, ptr, share, generator, always=True)
            found.append((s[event], i[event], members[item]))
        if self._tree is not None:
            found += self._descendants(found, generator)
        sample, instance, feature = (joined(list(column)) for column in zip(*found))
        return sample, instance, feature

    def _descendants(self, found, generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Children of the active parents, level by level down the hierarchy."""
        ptr, items, cond, has_children = self._tree
        s, i, f = (torch.cat(column) for column in zip(*found))
        new = []
        while True:
            parents = has_children[f]
            if not parents.any():
                return new
            s, i, f = s[parents], i[parents], f[parents]
            if self.hierarchy.exclusive_children:
                event, item = pick_in_segments(i, f, ptr, cond, generator)
            else:
                event, item = expand_segments(f, ptr)
                u = torch.rand(len(event), dtype=torch.float64, generator=generator, device=self.device)
                fires = u < cond[i[event], item]
                event, item = event[fires], item[fires]
            s, i, f = s[event], i[event], items[item]
            new.append((s, i, f))


def _as_structure(name: str, value, kind: type, convert):
    """None, an instance of `kind`, or (when `convert` is given) something `convert` accepts."""
    if value is None or isinstance(value, kind):
        return value
    if convert is None:
        raise TypeError(f"{name} must be a {kind.__name__}, got {value!r}")
    return convert(value)

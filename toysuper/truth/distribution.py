"""Ground-truth sparse features: which fire, how strongly, and how much each matters.

Elhage et al. 2022 ("Toy Models of Superposition"): feature i is 0 with probability S (the sparsity)
and otherwise drawn from U[0, 1]; it carries an importance I_i that weights its reconstruction error.
Here p = 1 - S may differ per feature and per instance, so sparsity can be a sweep axis that trains as
the instances of one batched model. The distribution composes a magnitude law, correlated / exclusive
groups, a hierarchy and a low-rank Gaussian copula (the sibling modules); none changes a feature's
marginal `firing_prob` (except a hierarchy given `child_prob=`, which sets the children's rates).

A batch is drawn with shapes set by the configuration and no host sync: first the random numbers
(`numbers`), then a pure transform of them (`transform`, which compiles with fullgraph=True). Per
instance, a rare feature that fires on its own is drawn by the Poisson events of `toysuper.truth.poisson`
(`sampling`); every other feature is a dense slot, one uniform u per (sample, slot) deciding both firing
and magnitude: u < p fires, and then v = u / p is again uniform and gives the magnitude by the inverse
CDF. Each part is drawn only for the instances that have it (`dense_instances`, `event_instances`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..checks import as_tensor, positive_int, probability_tensor
from ..devices import resolve_device
from ..memory import check_fits, distribution_bytes
from ..streams import as_streams, positions
from . import poisson
from .correlation import LowRankCorrelation
from .groups import CorrelatedGroups, ExclusiveGroups
from .hierarchy import Hierarchy
from .magnitudes import Magnitude, Uniform
from .shapes import per_instance_per_feature


SAMPLING = {"auto": 0.25, "sparse": 1.0, "dense": 0.0}
"""sampling= choices: a feature firing on its own below this rate is drawn by Poisson events."""

_LAST_BELOW_ONE = 1 - 2.0 ** -24  # the largest float32 below 1: uniforms stay inside [0, 1)
_TINY = 2.0 ** -100  # floor of a width before its reciprocal


class SparseFeatures(NamedTuple):
    """A batch in sparse form with a fixed number M of slots per (sample, instance).

    A feature appears at most once per row; unused slots hold value 0 (and some valid index).
    """

    index: torch.Tensor
    """(batch, inst, M) long: feature indices."""
    value: torch.Tensor
    """(batch, inst, M) float32: their activations."""

    def to_dense(self, n_features: int) -> torch.Tensor:
        """The dense activations, (batch, inst, n_features)."""
        batch, n_instances, _ = self.index.shape
        out = torch.zeros(batch, n_instances, n_features, device=self.value.device)
        return out.scatter_add_(-1, self.index, self.value)


class Numbers(NamedTuple):
    """The random numbers of one draw, instance-major: slot numbers for the instances with dense slots
    (`dense_instances`, D), event numbers for those with Poisson units (`event_instances`, E)."""

    events: torch.Tensor
    """(E, K, 2) uniforms: per event slot, its gap and its magnitude."""
    slots: torch.Tensor
    """Uniforms, one per group decision, then one per dense slot that reads its own: (D, batch, m) for
    independent features, slot-major (D, G + own, batch) for structured ones."""
    normals: torch.Tensor
    """(D, r, batch) standard normals: the copula's factors (r = 0 without one)."""
    copula: torch.Tensor
    """(D, c, batch) uniforms: one per copula-driven slot and sample, deciding its firing (c = 0 without)."""


class Draw(NamedTuple):
    """A drawn batch, instance-major; `FeatureDistribution.to_dense`, `to_sparse` and
    `toysuper.sources.hidden_from_draw` build what a consumer needs from it."""

    slots: torch.Tensor
    """(D, batch, m): the values of the dense slots (`FeatureDistribution.slot_feature`)."""
    place: torch.Tensor
    """(E, K) long: each event's row · n_features + feature, non-decreasing; an unused slot lands in a
    spare row past the batch (`toysuper.truth.poisson.Events`)."""
    value: torch.Tensor
    """(E, K): its activation, 0 for repeats."""
    overflow: torch.Tensor
    """(inst,): 1 where the Poisson budget may have cut events off (below 1e-12 per draw)."""
    dense_instances: torch.Tensor
    """(D,) long: the instances of the slots' rows."""
    event_instances: torch.Tensor
    """(E,) long: the instances of the events' rows."""


class FeatureDistribution:
    """Sparse ground-truth features with an instances axis.

    `firing_prob`: each feature's marginal probability of being non-zero, a number, `(n_features,)`,
    `(n_instances, 1)`, `(n_instances, n_features)` or a law such as `Zipf(exponent=1.0, l0=30)`; or
    `sparsity` S = 1 - firing_prob (exactly one of the two). `importance` I_i (the same shapes, 1 by
    default) weights a feature's reconstruction error; `magnitude` is a firing feature's law (`Uniform()`).
    Structure (a feature in one group at most, a hierarchy child in none): `correlated_groups`,
    `exclusive_groups` (or lists of indices), `hierarchy` (or {parent: [children]}), and `correlation`, a
    copula over the features that fire on their own (all but hierarchy children, whose rates it would
    shift). `sampling`: "auto" draws the features firing on their own below 1/4 by Poisson events, the
    rest densely; "sparse" every such feature below 1 by events; "dense" every feature densely: the same
    distribution, not the same numbers.

    `firing_prob` and `importance` are (inst, n_features), `magnitude` the law with its parameters so
    broadcast; `overflow` (inst,) counts the draws whose Poisson budget may have cut events off (a device
    tensor: read it between steps; expect 0).
    """

    def __init__(self, n_features: int, firing_prob=None, *, sparsity=None, n_instances: int = 1, importance=None,
                 magnitude: Magnitude | None = None, correlated_groups: CorrelatedGroups | None = None,
                 exclusive_groups=None, hierarchy=None, correlation: LowRankCorrelation | None = None,
                 sampling: str = "auto", device=None):
        self.n_features = positive_int("n_features", n_features)
        self.n_instances = positive_int("n_instances", n_instances)
        self.device = resolve_device(device)
        check_fits(f"FeatureDistribution(n_features={self.n_features}, n_instances={self.n_instances})",
                   distribution_bytes(self.n_features, self.n_instances), self.device)
        if (firing_prob is None) == (sparsity is None):
            raise ValueError(f"give exactly one of firing_prob or sparsity, got firing_prob={firing_prob!r}, "
                             f"sparsity={sparsity!r}")
        shape_args = (self.n_instances, self.n_features, self.device)
        if sparsity is not None:
            firing_prob = 1.0 - probability_tensor("sparsity", as_tensor("sparsity", sparsity, self.device))
        elif hasattr(firing_prob, "resolve"):
            firing_prob = firing_prob.resolve(*shape_args)
        else:
            probability_tensor("firing_prob", as_tensor("firing_prob", firing_prob, self.device))
        given = per_instance_per_feature("firing_prob", firing_prob, *shape_args)
        self.importance = per_instance_per_feature("importance", 1.0 if importance is None else importance, *shape_args)
        if (self.importance < 0).any() or not torch.isfinite(self.importance).all():
            raise ValueError(f"importance must be finite and >= 0, got {importance!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {list(SAMPLING)}, got {sampling!r}")
        self.sampling = sampling
        magnitude = Uniform() if magnitude is None else magnitude
        if not isinstance(magnitude, Magnitude):
            raise TypeError(f"magnitude must be a toysuper.truth.magnitudes law such as Uniform(), got {magnitude!r}")
        self.magnitude = magnitude.resolve(*shape_args)
        self.correlated_groups = _as_structure("correlated_groups", correlated_groups, CorrelatedGroups, False)
        self.exclusive_groups = _as_structure("exclusive_groups", exclusive_groups, ExclusiveGroups, True)
        self.hierarchy = _as_structure("hierarchy", hierarchy, Hierarchy, True)
        self.correlation = _as_structure("correlation", correlation, LowRankCorrelation, False)
        self._given_prob = given
        self._check_structure()
        self.firing_prob, child_cond = (given, None) if self.hierarchy is None else self.hierarchy.resolve(given)
        self._lay_out(child_cond)
        self.overflow = torch.zeros(self.n_instances, device=self.device)
        self._budgets: dict[int, int] = {}
        self._positions: dict[int, tuple] = {}

    @classmethod
    def sparsity_sweep(cls, n_features: int, sparsities, *, importance=None, device=None,
                       **kwargs) -> "FeatureDistribution":
        """One instance per sparsity S in `sparsities`; other keyword arguments pass through."""
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

    def expected_l0(self) -> torch.Tensor:
        """Mean number of active features per sample, shape (inst,)."""
        return self.firing_prob.sum(-1)

    # ---- drawing: numbers, then a pure transform ---------------------------------------

    def sample(self, batch_size: int, generator=None) -> torch.Tensor:
        """Draw feature activations, (batch, inst, n_features), a view of an instance-major tensor.

        `generator`: `Streams` from `toysuper.instance_generators` (instance i's numbers come from its
        stream alone; each draw advances it), or None / a torch.Generator / a list of one per instance,
        from which fresh streams are seeded once per call (`toysuper.streams.as_streams`).
        """
        return self.to_dense(self.draw(batch_size, generator))

    def sample_sparse(self, batch_size: int, generator=None) -> SparseFeatures:
        """Draw a batch in sparse form: (batch, inst, M) indices and values, M fixed by the configuration."""
        return self.to_sparse(self.draw(batch_size, generator))

    def draw(self, batch_size: int, generator=None) -> Draw:
        """`transform(numbers(...))`, counting Poisson overflows in `self.overflow` (no host sync)."""
        drawn = self.transform(self.numbers(batch_size, generator))
        if self._table is not None:
            self.overflow.add_(drawn.overflow)
        return drawn

    def numbers(self, batch_size: int, generator=None) -> Numbers:
        """The random numbers of one draw, each instance's from its own stream (`toysuper.streams`) at
        positions set by its own configuration, so that they do not depend on the other instances of the
        batch (padding past an instance's own Poisson budget reads gaps that land past the batch, but
        with probability < 1e-12)."""
        batch_size = positive_int("batch_size", batch_size)
        streams = as_streams(generator, self.n_instances, self.device)
        if batch_size not in self._positions:
            self._positions[batch_size] = self._lay_out_positions(batch_size)
        events, slots, normals, copula = self._positions[batch_size]
        return Numbers(streams.uniform(events, self._event_rows), streams.uniform(slots, self._dense_rows),
                       streams.normal(normals, self._dense_rows), streams.uniform(copula, self._dense_rows))

    def _lay_out_positions(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each number of a draw sits in its instance's stream: events (1, K, 2) at 2k + j; slots at
        sample · W + the column's id (its group's, or G + its feature), in the slots' layout; the copula's
        normals (1, r, batch) and uniforms (1, c, batch) at j · batch + b."""
        sample = torch.arange(batch_size, dtype=torch.int32, device=self.device)
        width = self._n_groups + self.n_features
        if batch_size * width >= 2**31:
            raise ValueError(f"batch_size={batch_size} is too large for {width} features and groups: a draw "
                             f"numbers its entries with 32-bit positions (batch_size * {width} < 2**31)")
        if self._plain:
            slots = sample[None, :, None] * width + self._column_id[:, None, :]
        else:
            slots = self._column_id[:, :, None] * batch_size + sample
        n_driven, n_normals = (0, 0) if self._copula is None else self._copula[1].shape  # the loadings, (c, r)
        budget = self._budgets.setdefault(  # Poisson gaps: the most any instance needs (P(more) < 1e-12)
            batch_size, max((poisson.budget(batch_size * rate) for rate in self._row_rates), default=0))
        return (positions(budget, 2, device=self.device), slots,
                positions(n_normals, batch_size, device=self.device),
                positions(n_driven, batch_size, device=self.device))

    def transform(self, numbers: Numbers) -> Draw:
        """Numbers to features: pure, fixed-shape, no host sync (compiles with fullgraph=True)."""
        batch_size = numbers.slots.shape[1 if self._plain else 2]
        slots = self._slot_values(numbers.slots, numbers.normals, numbers.copula) if self._n_slots else numbers.slots
        if self._table is None:
            return Draw(slots, *self._no_events, self._dense_rows, self._event_rows)
        events = poisson.events(numbers.events[..., 0], self._table, batch_size)
        params = self._event_magnitude
        if any(p.ndim for p in params):  # per-feature parameters: looked up at each event's feature
            feature = poisson.rows_and_features(events.place, self.n_features)[1].clamp_(max=self.n_features - 1)
            params = [p if p.ndim == 0 else p.gather(1, feature) for p in params]
        value = self.magnitude.quantile(numbers.events[..., 1], params) * events.keep
        overflow = events.overflow
        if len(self._event_rows) < self.n_instances:
            overflow = overflow.new_zeros(self.n_instances).index_copy(0, self._event_rows, overflow)
        return Draw(slots, events.place, value, overflow, self._dense_rows, self._event_rows)

    def to_dense(self, drawn: Draw) -> torch.Tensor:
        """(batch, inst, n_features) from a draw (stored instance-major, see `sample`)."""
        batch_size, n = drawn.slots.shape[1], self.n_features
        if self.identity_slots and self._table is None:  # the slots are the dense output
            return drawn.slots.transpose(0, 1)
        # one spare row past the batch takes the unused event slots (which add 0)
        out = torch.zeros(self.n_instances, batch_size + 1, n, device=self.device)
        if self._n_slots and self._slot_feature_is_identity:
            out[:, :batch_size].index_copy_(0, self._dense_rows, drawn.slots)
        elif self._n_slots:  # each slot's place in the output: (instance row · (batch + 1) + sample) · n + feature
            place = (self._dense_rows[:, None, None] * (batch_size + 1)
                     + torch.arange(batch_size, device=self.device)[:, None]) * n + self.slot_feature[:, None, :]
            out.view(-1).scatter_add_(0, place.flatten(), drawn.slots.flatten())
        if self._table is not None:
            place = drawn.place + (self._event_rows * ((batch_size + 1) * n))[:, None]
            out.view(-1).scatter_add_(0, place.flatten(), drawn.value.flatten())
        return out[:, :batch_size].transpose(0, 1)

    def to_sparse(self, drawn: Draw) -> SparseFeatures:
        """SparseFeatures from a draw: M = the per-row event budget plus the dense slots. A row with more
        events than its budget (below 1e-12 per row) loses the extra ones, counted in `overflow`."""
        batch_size, n_slots = drawn.slots.shape[1], self._n_slots
        width = self._row_budget if self._table is not None else 0
        index = torch.zeros(self.n_instances, batch_size, width + n_slots, dtype=torch.long, device=self.device)
        value = torch.zeros(self.n_instances, batch_size, width + n_slots, device=self.device)
        if n_slots:
            index[..., width:].index_copy_(0, self._dense_rows, self.slot_feature[:, None, :].expand(
                -1, batch_size, -1).contiguous())
            value[..., width:].index_copy_(0, self._dense_rows, drawn.slots)
        if self._table is not None:
            n_events = len(self._event_rows)
            row, feature = poisson.rows_and_features(drawn.place, self.n_features)
            start, counts = poisson.row_starts(row, batch_size)
            place = torch.arange(row.shape[1], device=self.device) - start.gather(1, row)
            fits = (row < batch_size) & (place < width)
            target = torch.where(fits, row * width + place, batch_size * width)  # the rest to a spare slot
            events_index = feature.new_zeros(n_events, batch_size * width + 1).scatter_(1, target, feature)
            events_value = drawn.value.new_zeros(n_events, batch_size * width + 1).scatter_(1, target, drawn.value)
            self.overflow.index_add_(0, self._event_rows, (counts[:, :batch_size] > width).sum(1).float())
            index[..., :width].index_copy_(0, self._event_rows, events_index[:, :-1].view(n_events, batch_size, width))
            value[..., :width].index_copy_(0, self._event_rows, events_value[:, :-1].view(n_events, batch_size, width))
        return SparseFeatures(index.transpose(0, 1), value.transpose(0, 1))

    def to(self, device) -> "FeatureDistribution":
        """A copy of this distribution that samples on `device`."""
        return self.select(range(self.n_instances), device)

    def select(self, instances, device=None) -> "FeatureDistribution":
        """A distribution whose instance k has the settings of this one's instance instances[k]."""
        index = torch.as_tensor(list(instances), dtype=torch.long)
        if index.ndim != 1 or not len(index) or index.min() < 0 or index.max() >= self.n_instances:
            raise ValueError(f"instances must be a non-empty list of indices below {self.n_instances}, "
                             f"got {instances!r}")
        hierarchy = self.hierarchy
        if hierarchy is not None and hierarchy.child_prob is not None:
            cond = per_instance_per_feature("child_prob", hierarchy.child_prob, self.n_instances, self.n_features,
                                            torch.device("cpu"))[index]
            hierarchy = Hierarchy(hierarchy.edges, hierarchy.exclusive_children, cond,
                                  hierarchy.scale_children_by_parent)
        magnitude = type(self.magnitude)(**{name: value.cpu()[index]
                                                  for name, value in self.magnitude.params.items()})
        return FeatureDistribution(self.n_features, self._given_prob.cpu()[index], n_instances=len(index),
                                   importance=self.importance.cpu()[index], magnitude=magnitude,
                                   correlated_groups=self.correlated_groups, exclusive_groups=self.exclusive_groups,
                                   hierarchy=hierarchy, correlation=self.correlation, sampling=self.sampling,
                                   device=self.device if device is None else device)

    def __repr__(self) -> str:
        p = self.firing_prob
        parts = [f"n_features={self.n_features}", f"n_instances={self.n_instances}",
                 f"firing_prob in [{p.min().item():.4g}, {p.max().item():.4g}]", f"magnitude={self.magnitude!r}"]
        parts += [repr(s) for s in (self.correlated_groups, self.exclusive_groups, self.hierarchy, self.correlation)
                  if s is not None]
        return f"FeatureDistribution({', '.join(parts)}, device={self.device})"

    # ---- the dense slots -------------------------------------------------------------

    def _slot_values(self, u: torch.Tensor, normals: torch.Tensor, copula: torch.Tensor) -> torch.Tensor:
        """Values of the dense slots, (inst, batch, m), from their uniforms (`Numbers.slots`).

        Slot j reads one uniform x (its own, or its group's) and fires when lo_j <= x < hi_j; then
        (x - lo_j) / (hi_j - lo_j) is again uniform and gives its magnitude:
        - an independent feature: its own x, [0, p);
        - an exclusive group's members: the group's x, consecutive intervals of widths p_i, so exactly
          one fires with probability p_i each and none with 1 - Σ p_i;
        - exclusive children: the same with P(child | parent) as widths, then gated by the parent;
        - other children: their own x, [0, P(child | parent)), gated by the parent;
        - a correlated group's members: their own x, [0, a_i), or the group's shared event (its x below
          q); fired by the shared event alone, (x - a_i) / (1 - a_i) is the uniform (`CorrelatedGroups`);
        - under a copula, x = Φ(-z) for the copula's Gaussian z = F e + s η (exactly uniform), and the own
          uniform gives the magnitude instead. lo <= Φ(-z) < hi is drawn as
          Φ((F e - T_lo)/s) <= w < Φ((F e - T_hi)/s), T = Φ⁻¹(1 - ·), for a uniform w in the place of
          Φ(-η): the same law, one (c x r) matmul and one erfc per entry instead of a normal and Φ.
        Hierarchy gating runs level by level, parents first, so a child follows its parent's final state
        (and, with scale_children_by_parent, its parent's value over its mean). Masks are 0/1 floats.
        """
        lo, hi, inv_width = self._intervals
        if self._plain:  # independent features only: x is the own uniform, lo = 0
            fires = _less(u, hi)
            value = self.magnitude.quantile(u.mul(inv_width).mul_(fires), self._slot_magnitude)
            return value if self.magnitude.zero_at_zero else value.mul_(fires)
        # x, mean and the masks are this draw's own: updated in place (a fresh tensor costs CPU page faults)
        x = u.index_select(1, self._column)  # (inst, m, batch)
        rest = None if self._shared is None else torch.sub(x, hi).mul_(self._inv_rest)
        # lo <= x < hi: x < hi, then x - lo (exact in sign: 0 only where x = lo) gives its sign to the mask
        fires = _less(x, hi).copysign_(x.sub_(lo)).clamp_min_(0)
        if self._copula is not None:  # Φ(y) = erfc(-y/√2) / 2; the tables hold T/(s√2) and F/(s√2)
            driven, loadings, upper, lower = self._copula
            mean = torch.matmul(loadings, normals)
            below = None if lower is None else _less(copula, torch.sub(lower, mean).erfc_().mul_(0.5))
            driven_fires = torch.gt(mean.neg_().add_(upper).erfc_().mul_(0.5), copula, out=mean)  # w < Φ, in place
            fires.index_copy_(1, driven, driven_fires if below is None else driven_fires.sub_(below))
        v = x.mul_(inv_width).mul_(fires)  # (a driven slot's tables make v its own uniform)
        if self._shared is not None:
            shared_column, shared_rate = self._shared
            shared = _less(u.index_select(1, shared_column), shared_rate)  # the group's shared event
            inside, fires = fires, torch.maximum(fires, shared)
            v.add_(rest.mul_(fires - inside))
        if v.device.type == "cpu" and not torch.compiler.is_compiling():
            return self._fired_values(v, fires).transpose(1, 2)
        value = self.magnitude.quantile(v.clamp_(0, _LAST_BELOW_ONE), self._slot_magnitude).mul_(fires)
        for child, parent, parent_mean, regular in self._levels:  # fires and value are this draw's own: in place
            gate = fires.index_select(1, parent)
            _gate_children(fires, child, parent, regular)
            if parent_mean is not None:
                gate = value.index_select(1, parent).div_(parent_mean)
            value.index_copy_(1, child, value.index_select(1, child).mul_(gate))
        return value.transpose(1, 2)

    def _fired_values(self, v: torch.Tensor, fires: torch.Tensor) -> torch.Tensor:
        """`_slot_values`'s values, (D, m, batch), with the magnitudes computed at the firing entries alone
        (on a CPU, eagerly, where listing them costs a free host sync): the same ops on the same numbers as
        the dense path. Gating first, then the inverse CDF at each fired entry, then the scaling by parents."""
        for child, parent, _, regular in self._levels:
            _gate_children(fires, child, parent, regular)
        batch_size, n_slots = v.shape[2], v.shape[1]
        fired = fires.view(-1).nonzero().squeeze(1)
        slot = torch.div(fired, batch_size, rounding_mode="floor")  # (row, slot) of each, flattened
        params = [p if p.ndim == 0 else p.reshape(-1)[slot] for p in self._slot_magnitude]
        value = self.magnitude.quantile(v.view(-1)[fired].clamp_(0, _LAST_BELOW_ONE), params)
        values = v.zero_().view(-1).index_copy_(0, fired, value)  # (v's memory: a fresh tensor costs page faults)
        if self._scaled_levels is not None:
            level, step_to_parent, parent_mean = self._scaled_levels
            column = slot.remainder(n_slots)
            fired_level, to_parent, mean = level[column], step_to_parent[column] * batch_size, parent_mean[slot]
            for depth in range(len(self._levels)):
                children = (fired_level == depth).nonzero().squeeze(1)
                where = fired[children]
                gate = values[where + to_parent[children]].div_(mean[children])
                values[where] = values[where].mul_(gate)
        return values.view_as(v)

    # ---- layout, built once from the configuration -----------------------------------------

    def _check_structure(self) -> None:
        owner: dict[int, str] = {}
        for structure in (self.correlated_groups, self.exclusive_groups):
            if structure is None:
                continue
            structure.check(self.n_features)
            for f in structure.features:
                if f in owner:
                    raise ValueError(f"feature {f} is in both {owner[f]} and {structure.kind}; a feature may be in "
                                     f"one group at most")
                owner[f] = structure.kind
        if self.hierarchy is not None:
            self.hierarchy.check(self.n_features)
            for f in self.hierarchy.children:
                if f in owner:
                    raise ValueError(f"feature {f} is a hierarchy child and in {owner[f]}; a child fires only through "
                                     f"its parent, so it cannot be in a group (its parent can)")

    def _lay_out(self, child_cond: torch.Tensor | None) -> None:
        """Decide, per instance, which features are dense slots and which Poisson units, and build the
        tables of both. Structured features come first, in the same slots for every instance."""
        n, n_instances, device, p = self.n_features, self.n_instances, self.device, self.firing_prob.double().cpu()
        # by feature: its group's column, its interval [lo, hi) (inst,), its shared event's (column, rate)
        column, lo, hi, shared = {}, {}, {}, {}
        n_groups = 0
        if self.exclusive_groups is not None:
            self.exclusive_groups.rates(self.firing_prob)  # checks that each group's rates sum to at most 1
            for members in self.exclusive_groups.groups:
                n_groups = _consecutive(members, p[:, list(members)], n_groups, column, lo, hi)
        if self.correlated_groups is not None:
            q, own = self.correlated_groups.rates(self.firing_prob.cpu())
            members = [(g, f) for g, group in enumerate(self.correlated_groups.groups) for f in group]
            for t, (g, f) in enumerate(members):
                hi[f], shared[f] = own[:, t], (n_groups + g, q[:, g])
            n_groups += len(self.correlated_groups)
        structured = set(hi)
        if self.hierarchy is not None:
            cond = child_cond.cpu()
            for parent, kids in sorted(self.hierarchy.edges):
                structured.add(parent)
                if self.hierarchy.exclusive_children:
                    n_groups = _consecutive(kids, cond[:, list(kids)], n_groups, column, lo, hi)
                else:
                    hi.update({kid: cond[:, kid] for kid in kids})
            structured |= set(hi)
        structured = list(range(n)) if self.correlation is not None else sorted(structured)
        # the rest fire on their own: Poisson units below the rule's rate, dense slots above it
        free = torch.ones(n, dtype=torch.bool)
        free[structured] = False
        cutoff = SAMPLING[self.sampling]
        dense_free = [torch.nonzero(free & (p[i] >= cutoff)).squeeze(1) for i in range(n_instances)]
        units = [torch.nonzero(free & (p[i] < cutoff)).squeeze(1) for i in range(n_instances)]
        # D: the instances with dense slots; E: those with Poisson units that can fire
        dense_rows = [i for i in range(n_instances) if structured or len(dense_free[i])]
        event_rows = [i for i in range(n_instances) if len(units[i]) and p[i, units[i]].sum() > 0]
        self._dense_rows = torch.tensor(dense_rows, dtype=torch.long, device=device)
        self._event_rows = torch.tensor(event_rows, dtype=torch.long, device=device)
        self._n_groups = n_groups
        self._n_slots = n_slots = max((len(structured) + len(dense_free[i]) for i in dense_rows), default=0)
        self._plain = not structured  # independent features only
        # independent features, and some instance draws every one densely: then every instance gets the
        # identity layout (slot j is feature j; features it draws by events never fire there)
        identity = self._plain and n_slots == n
        slot_feature = torch.zeros(len(dense_rows), n_slots, dtype=torch.long)
        slot_hi = torch.zeros(len(dense_rows), n_slots, dtype=torch.float64)  # features on their own: [0, p)
        for row, i in enumerate(dense_rows):
            features = torch.cat([torch.tensor(structured, dtype=torch.long), dense_free[i]])
            place = features if identity else slice(len(features))
            slot_feature[row, place], slot_hi[row, place] = features, p[i, features]
        if identity:
            slot_feature[:] = torch.arange(n)
        slot_lo = torch.zeros_like(slot_hi)
        for j, f in enumerate(structured):  # (structured: every instance has dense slots)
            if f in hi:
                slot_lo[:, j], slot_hi[:, j] = lo.get(f, 0), hi[f]
        local = {f: j for j, f in enumerate(structured)}
        # the numbers' columns: the groups', then one per structured slot that reads its own uniform, then
        # one per free slot; each column's id in its instance's stream: a group's g, a feature's G + feature
        own_structured = [f for f in structured if f not in column]
        column.update({f: n_groups + k for k, f in enumerate(own_structured)})
        n_columns = n_groups + len(own_structured)
        head = torch.tensor(list(range(n_groups)) + [n_groups + f for f in own_structured], dtype=torch.long)
        column_id = torch.cat([head.expand(len(dense_rows), -1), n_groups + slot_feature[:, len(structured):]], 1)
        if len(column_id) and bool((column_id == column_id[:1]).all()):
            column_id = column_id[:1]  # one layout for every instance: broadcast it
        self._column_id = column_id.to(torch.int32).to(device)
        free_columns = range(n_columns, n_columns + n_slots - len(structured))
        self._column = torch.tensor([column[f] for f in structured] + list(free_columns), dtype=torch.long,
                                    device=device)

        def along(table: torch.Tensor) -> torch.Tensor:
            """A per-slot table broadcast against the slots' layout: (D, 1, m), or (D, m, 1) slot-major."""
            table = table.float().to(device)
            return table[:, None, :] if self._plain else table[..., None]

        v_lo, v_scale = slot_lo.clone(), 1 / (slot_hi - slot_lo).clamp_min(_TINY)
        rest = 1 / (1 - slot_hi).clamp_min(_TINY)
        self._shared = None
        if shared:
            columns = torch.zeros(n_slots, dtype=torch.long)
            rates = torch.zeros(n_instances, n_slots, dtype=torch.float64)
            for f, (c, rate) in shared.items():
                columns[local[f]], rates[:, local[f]] = c, rate
            self._shared = (columns.to(device), along(rates))
        # hierarchy levels, and per slot (for `_fired_values`): its level (-1 off the hierarchy), its parent's
        # slot - its own, its parent's mean magnitude
        self._levels, self._scaled_levels = [], None
        scaled = self.hierarchy is not None and self.hierarchy.scale_children_by_parent
        level_of, step = torch.full((n_slots,), -1), torch.zeros(n_slots, dtype=torch.long)
        parent_means = torch.ones(len(dense_rows), n_slots)
        parent_of, mean = self.parent.cpu(), self.magnitude.mean().cpu()[dense_rows]
        for depth, level in enumerate([] if self.hierarchy is None else self.hierarchy.levels()):
            child = torch.tensor([local[c] for c in level], dtype=torch.long)
            parent = torch.tensor([local[int(parent_of[c])] for c in level], dtype=torch.long)
            level_of[child], step[child] = depth, parent - child
            parent_means[:, child] = mean[:, parent_of[level]].clamp_min(1e-30).float()
            self._levels.append((child.to(device), parent.to(device), along(parent_means[:, child]) if scaled else None,
                                 _regular(child, parent)))
        if scaled:
            self._scaled_levels = (level_of.to(device), step.to(device), parent_means.view(-1).to(device))
        self._copula = None
        if self.correlation is not None:  # (structured is every feature: slot j is feature j)
            children = set(self.hierarchy.children) if self.hierarchy else set()
            driven = torch.tensor([j for j in structured if j not in children], dtype=torch.long)
            loadings, own_scale = self.correlation.factor(n, "cpu")
            scale = own_scale[driven].double()[:, None] * 2 ** 0.5  # s√2
            upper, lower = (torch.special.ndtri(1 - bound[:, driven]) / scale[:, 0] for bound in (slot_hi, slot_lo))
            self._copula = (driven.to(device), (loadings[driven].double() / scale).float().to(device),
                            along(upper), along(lower) if bool((slot_lo[:, driven] > 0).any()) else None)
            # a driven slot's magnitude reads its own uniform as it is: v = (x - 0) · 1, nothing from a shared event
            v_lo[:, driven], v_scale[:, driven], rest[:, driven] = 0, 1, 0
        self._intervals = tuple(along(t) for t in (v_lo, slot_hi, v_scale))
        self._inv_rest = along(rest)
        self.slot_feature = slot_feature.to(device)
        """(D, m) long: the feature of each dense slot of the instances in `dense_instances` (padding never fires)."""
        self.dense_instances, self.event_instances = dense_rows, event_rows
        self._slot_feature_is_identity = n_slots == n and bool((slot_feature == torch.arange(n)).all())
        self.identity_slots = self._slot_feature_is_identity and len(dense_rows) == n_instances
        self._slot_magnitude = [along(t) if t.ndim else t for t in self.magnitude.gather(self.slot_feature,
                                                                                       self._dense_rows)]
        empty = torch.zeros(0, 0, device=device)
        self._no_events = (empty.long(), empty, torch.zeros(n_instances, device=device))
        self._table, self._row_rates = None, []
        if event_rows:
            self._table = poisson.build_table([p[i, units[i]] for i in event_rows], [units[i] for i in event_rows],
                                              device, n)
            self._row_rates = self._table.row_rate.flatten().tolist()  # host copy: budgets need no sync
            self._row_budget = poisson.budget(max(self._row_rates))  # event slots per row in `to_sparse`
            self._event_magnitude = self.magnitude.gather(None, self._event_rows)


def _regular(child: torch.Tensor, parent: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(c0, n, p0, k) when a level's children are the slots c0 .. c0 + n - 1, k to a parent, whose parents are
    p0, p0 + 1, ... in order (a regular tree laid out breadth first, as SynthSAEBench's): then gating is a
    multiply of slices, not a gather and a scatter. None otherwise."""
    n, c0, p0 = len(child), int(child[0]), int(parent[0])
    k = n // max(1, int(parent[-1]) - p0 + 1)
    if k * (int(parent[-1]) - p0 + 1) != n or not torch.equal(child, torch.arange(c0, c0 + n)) \
            or not torch.equal(parent, p0 + torch.arange(n) // k):
        return None
    return c0, n, p0, k


def _gate_children(fires: torch.Tensor, child: torch.Tensor, parent: torch.Tensor, regular) -> None:
    """fires[:, child] *= fires[:, parent], in place, fires (D, m, batch)."""
    if regular is None:
        fires.index_copy_(1, child, fires.index_select(1, child).mul_(fires.index_select(1, parent)))
    else:
        c0, n, p0, k = regular
        fires[:, c0:c0 + n].view(len(fires), n // k, k, -1).mul_(fires[:, p0:p0 + n // k, None])


def _less(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a < b as 0/1 floats, broadcast: written straight into floats (on CPUs twice as fast as through bools,
    and a float mask multiplies faster than a bool one)."""
    return torch.lt(a, b, out=torch.empty(torch.broadcast_shapes(a.shape, b.shape), device=a.device))


def _consecutive(members, rates: torch.Tensor, column: int, columns: dict, lo: dict, hi: dict) -> int:
    """Members sharing one uniform, `column`: consecutive intervals of the given widths, (inst, k) rates.
    Returns the next free column."""
    edges = torch.cat([torch.zeros(rates.shape[0], 1, dtype=torch.float64), rates.double().cumsum(1)], 1)
    for k, f in enumerate(members):
        columns[f], lo[f], hi[f] = column, edges[:, k], edges[:, k + 1]
    return column + 1


def _as_structure(name: str, value, kind: type, convert: bool):
    """None, an instance of `kind`, or (when `convert`) what `kind` is built from."""
    if value is None or isinstance(value, kind):
        return value
    if not convert:
        raise TypeError(f"{name} must be a {kind.__name__}, got {value!r}")
    return kind(value)

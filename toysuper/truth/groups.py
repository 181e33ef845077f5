"""Groups of features that fire together (correlated) or never together (mutually exclusive).

"Python code" and "indentation" co-occur, "French" and "German" exclude one another. Both kinds keep
every feature's marginal firing probability p_i as given and change only which features fire at the
same time; magnitudes stay independent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..checks import as_tensor


class _Groups:
    """Disjoint groups of feature indices, each of at least 2 features."""

    def __init__(self, groups: Sequence[Sequence[int]]):
        try:
            self.groups = [tuple(int(f) for f in group) for group in groups]
        except (TypeError, ValueError) as error:
            raise TypeError(f"{self.kind} must be a sequence of sequences of feature indices, "
                            f"got {groups!r}") from error
        if not self.groups:
            raise ValueError(f"{self.kind} must hold at least one group, got {groups!r}")
        seen = set()
        for group in self.groups:
            if len(group) < 2:
                raise ValueError(f"{self.kind}: every group needs at least 2 features, got {list(group)}")
            for feature in group:
                if feature in seen:
                    raise ValueError(f"{self.kind}: feature {feature} appears in more than one group or twice")
                seen.add(feature)

    @classmethod
    def consecutive(cls, n_groups: int, size: int, start: int = 0, **kwargs):
        """Groups of `size` neighbouring features: [start, start+size), [start+size, start+2 size), ..."""
        return cls([range(start + g * size, start + (g + 1) * size) for g in range(n_groups)], **kwargs)

    @property
    def features(self) -> list[int]:
        """Every feature in some group."""
        return [f for group in self.groups for f in group]

    def check(self, n_features: int) -> None:
        """Raise ValueError if a group names a feature outside [0, n_features)."""
        bad = [f for f in self.features if not 0 <= f < n_features]
        if bad:
            raise ValueError(f"{self.kind} names feature {bad[0]}, outside [0, {n_features})")

    def _members(self, firing_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' rates p (inst, Σ sizes) in `features` order, float64, and each one's group (Σ sizes,)."""
        group_of = [g for g, group in enumerate(self.groups) for _ in group]
        return (firing_prob[:, self.features].double(),
                torch.tensor(group_of, dtype=torch.long, device=firing_prob.device))

    def __len__(self) -> int:
        return len(self.groups)

    def __repr__(self) -> str:
        sizes = sorted({len(g) for g in self.groups})
        return f"{type(self).__name__}({len(self.groups)} groups of size {sizes})"


class CorrelatedGroups(_Groups):
    """Groups whose features tend to fire together, each with a stated correlation ρ in [0, 1].

    A common cause: each group has a shared event that fires with probability q and fires every
    member; otherwise member i fires on its own with probability a_i = (p_i - q) / (1 - q), so that
    P(i fires) = q + (1 - q) a_i = p_i. ρ is the Pearson correlation of two members' firing indicators
    (their phi coefficient); this model gives corr(i, j) = q / (1 - q) · sqrt(o_i o_j), o_i = (1 - p_i) / p_i,
    and q is set from the group's smallest rate by q / (1 - q) = ρ p_min / (1 - p_min): members with equal
    rates correlate exactly ρ, others at most ρ. ρ = 0 is independence; ρ = 1 with equal rates makes the
    group fire as one. `correlation`: ρ, one number or one per group.
    """

    kind = "correlated_groups"

    def __init__(self, groups: Sequence[Sequence[int]], correlation=0.5):
        super().__init__(groups)
        rho = as_tensor("correlation", correlation, torch.device("cpu")).flatten()
        if rho.numel() not in (1, len(self.groups)):
            raise ValueError(f"correlation must be one number or one per group ({len(self.groups)}), "
                             f"got {correlation!r}")
        if not ((rho >= 0) & (rho <= 1)).all():
            raise ValueError(f"correlation must lie in [0, 1], got {correlation!r}")
        self.correlation = rho.expand(len(self.groups)).clone()

    def rates(self, firing_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the marginal rates p (inst, n): the shared events' rates q (inst, G) and the
        members' own rates a (inst, Σ sizes), in `features` order."""
        p, group_of = self._members(firing_prob)
        p_min = torch.stack([firing_prob[:, list(group)].double().amin(1) for group in self.groups], 1)
        rho = self.correlation.to(p.device, p.dtype)
        denominator = 1 - p_min + rho * p_min
        q = torch.where(denominator > 0, rho * p_min / denominator.clamp_min(1e-300), torch.zeros_like(p_min))
        q_member = q[:, group_of]
        own = torch.where(q_member < 1, (p - q_member) / (1 - q_member).clamp_min(1e-300), torch.zeros_like(p))
        return q, own.clamp(0, 1)


class ExclusiveGroups(_Groups):
    """Groups of which at most one feature fires per sample.

    Each group fires with probability P = Σ_{i in group} p_i and then exactly one member,
    member i with probability p_i / P, so each feature keeps its rate p_i; Σ p_i <= 1 is required.
    """

    kind = "exclusive_groups"

    def rates(self, firing_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the marginal rates p (inst, n): the groups' rates P (inst, G) and each member's
        share p_i / P (inst, Σ sizes), in `features` order; a ValueError where Σ p_i > 1."""
        p, group_of = self._members(firing_prob)
        total = torch.zeros(p.shape[0], len(self.groups), dtype=p.dtype, device=p.device).index_add(1, group_of, p)
        over = total > 1 + 1e-6
        if over.any():
            inst, group = over.nonzero()[0].tolist()
            raise ValueError(f"exclusive_groups: the firing probabilities of group {list(self.groups[group])} sum to "
                             f"{total[inst, group].item():.4g} > 1 (instance {inst}); at most one can fire")
        return total.clamp(max=1), p / total[:, group_of].clamp_min(1e-300)


"""Nested features: a child fires only when its parent fires ("dog" only inside "animal").

Hierarchies are what makes SAEs absorb features (Chanin et al. 2024, "A is for Absorption"): a
latent for the parent learns to stay silent where a child fires. The testbed plants them so that
failure can be measured.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..checks import positive_int
from .shapes import per_instance_per_feature

_TOLERANCE = 1e-6  # slack for float32 rates when checking p_child <= p_parent


class Hierarchy:
    """A forest over feature indices: a child fires only in samples where its parent fires.

    `children`: {parent: [children]} or (parent, [children]) pairs; a child has one parent and may be a
    parent itself (any depth); no cycles. `exclusive_children`: at most one child of a parent fires.
    `child_prob`: None (default): a child's `firing_prob` is its marginal rate, p_child <= p_parent (Σ over
    siblings <= p_parent when exclusive), and P(child | parent) = p_child / p_parent. A number,
    `(n_features,)` or `(n_instances, n_features)`: P(child | parent) itself; the child's marginal rate
    p_parent · child_prob then replaces its `firing_prob` entry. `scale_children_by_parent`: a firing
    child's magnitude is multiplied by its parent's value over the parent's mean magnitude, level by level
    (SynthSAEBench's hierarchy, Chanin & Garriga-Alonso 2026); firing is unchanged. `edges`: (parent,
    tuple of children) pairs in the order given.
    """

    def __init__(self, children, exclusive_children: bool = False, child_prob=None,
                 scale_children_by_parent: bool = False):
        items = children.items() if isinstance(children, Mapping) else children
        try:
            self.edges = [(int(parent), tuple(int(c) for c in kids)) for parent, kids in items]
        except (TypeError, ValueError) as error:
            raise TypeError(f"hierarchy children must be {{parent: [children]}} or (parent, [children]) pairs, "
                            f"got {children!r}") from error
        if not self.edges or not all(kids for _, kids in self.edges):
            raise ValueError(f"hierarchy needs at least one parent and every parent at least one child, "
                             f"got {children!r}")
        for name, flag in (("exclusive_children", exclusive_children),
                           ("scale_children_by_parent", scale_children_by_parent)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.exclusive_children = exclusive_children
        self.scale_children_by_parent = scale_children_by_parent
        self.child_prob = child_prob
        parents, kids = [parent for parent, _ in self.edges], self.children
        if len(set(parents)) != len(parents):
            raise ValueError(f"hierarchy lists parent {_first_repeat(parents)} twice; give all its children at once")
        if len(set(kids)) != len(kids):
            raise ValueError(f"hierarchy gives feature {_first_repeat(kids)} more than one parent (or lists it twice)")
        unreached = set(kids) - {c for level in self.levels() for c in level}
        if unreached:  # every child descends from a root, or the edges close a loop
            raise ValueError(f"hierarchy has a cycle through feature {min(unreached)}, got {children!r}")

    @classmethod
    def regular(cls, n_parents: int, n_children: int, start: int = 0, **kwargs) -> "Hierarchy":
        """Parents start .. start+n_parents-1; parent k's children are the next block of
        `n_children` features after all the parents: start + n_parents + k·n_children + (0..n_children-1)."""
        first_child = start + n_parents
        return cls({start + k: range(first_child + k * n_children, first_child + (k + 1) * n_children)
                    for k in range(n_parents)}, **kwargs)

    @classmethod
    def tree(cls, n_roots: int, branching: int, depth: int, *, start: int = 0, limit: int | None = None,
             **kwargs) -> "Hierarchy":
        """A forest of `n_roots` trees in which every node above `depth` has `branching` children.

        Laid out breadth first, as SynthSAEBench's generator does: the roots are features start ..
        start + n_roots - 1, then each level's children in turn, a parent's children consecutive, so
        feature f's parent is start + (f - start - n_roots) // branching.
        `limit`: stop before this feature index (the last parents may then have fewer children).
        """
        n_roots, branching, depth = (positive_int(name, value) for name, value in
                                     (("n_roots", n_roots), ("branching", branching), ("depth", depth)))
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be a whole number >= 0, got {start!r}")
        end = start + n_roots * sum(branching ** level for level in range(depth + 1))
        end = end if limit is None else min(end, positive_int("limit", limit))
        if start + n_roots >= end:
            raise ValueError(f"tree: no room for children: roots {start}..{start + n_roots - 1}, limit={limit!r}")
        edges = {}
        for f in range(start + n_roots, end):
            edges.setdefault(start + (f - start - n_roots) // branching, []).append(f)
        return cls(edges, **kwargs)

    @property
    def children(self) -> list[int]:
        return [c for _, cs in self.edges for c in cs]

    def parent(self, n_features: int, device=None) -> torch.Tensor:
        """Parent index per feature, -1 for roots: (n_features,) long."""
        parent = torch.full((n_features,), -1, dtype=torch.long)
        for p, kids in self.edges:
            parent[list(kids)] = p
        return parent.to(device)

    def check(self, n_features: int) -> None:
        """Raise ValueError for an index outside [0, n_features) (a cycle is refused when built)."""
        for f in (f for p, kids in self.edges for f in (p, *kids)):
            if not 0 <= f < n_features:
                raise ValueError(f"hierarchy names feature {f}, outside [0, {n_features})")

    def levels(self) -> list[list[int]]:
        """The children by depth: [children of roots, grandchildren, ...] (a cycle is never reached)."""
        kids_of, is_child = dict(self.edges), set(self.children)
        levels, frontier = [], [p for p, _ in self.edges if p not in is_child]
        while frontier:
            frontier = [c for p in frontier for c in kids_of.get(p, ())]
            if frontier:
                levels.append(frontier)
        return levels

    def resolve(self, firing_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal rates (inst, n), and P(child | parent) (inst, n) float64, read at the children's columns."""
        n_instances, n_features = firing_prob.shape
        device = firing_prob.device
        by_parent = sorted(self.edges)
        items = torch.tensor([c for _, kids in by_parent for c in kids], device=device)
        parent_of_item = torch.tensor([p for p, kids in by_parent for _ in kids], device=device)
        marginal = firing_prob.double().clone()
        if self.child_prob is not None:
            cond = per_instance_per_feature("child_prob", self.child_prob, n_instances, n_features, device).double()
            bad = ~((cond[:, items] >= 0) & (cond[:, items] <= 1))
            if bad.any():
                raise ValueError(f"child_prob must lie in [0, 1], got {cond[:, items][bad][0].item()!r}")
            parent = self.parent(n_features, device)
            for level in self.levels():  # a level's parents are final before its children
                level = torch.tensor(level, device=device)
                marginal[:, level] = marginal[:, parent[level]] * cond[:, level]
        else:
            p_child, p_parent = marginal[:, items], marginal[:, parent_of_item]
            over = p_child > p_parent + _TOLERANCE
            if over.any():
                inst, k = over.nonzero()[0].tolist()
                raise ValueError(f"hierarchy: child {items[k].item()} has firing_prob {p_child[inst, k].item():.4g} > "
                                 f"its parent {parent_of_item[k].item()}'s {p_parent[inst, k].item():.4g} (instance "
                                 f"{inst}); a child fires only with its parent (or pass child_prob=)")
            cond = torch.zeros_like(marginal)
            cond[:, items] = torch.where(p_parent > 0, p_child / p_parent.clamp_min(1e-300), 0.0).clamp(0, 1)
        if self.exclusive_children:
            total = torch.zeros_like(marginal).index_add(1, parent_of_item, cond[:, items])
            over = total > 1 + _TOLERANCE
            if over.any():
                inst, parent = over.nonzero()[0].tolist()
                raise ValueError(f"hierarchy: exclusive children of feature {parent} fire with conditional "
                                 f"probabilities summing to {total[inst, parent].item():.4g} > 1 (instance {inst})")
        return marginal.float(), cond

    def __repr__(self) -> str:
        return (f"Hierarchy({len(self.edges)} parents, {len(self.children)} children, "
                f"exclusive_children={self.exclusive_children}, "
                f"scale_children_by_parent={self.scale_children_by_parent})")


def _first_repeat(values: list[int]) -> int:
    return next(v for i, v in enumerate(values) if v in values[:i])

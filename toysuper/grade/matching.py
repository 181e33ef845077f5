"""Matching true features to SAE latents by the cosine of their directions: with G the true directions
(n × d) and D the decoder directions (k × d), both unit rows, C = G Dᵀ. All but `cosine_tops` work on
one instance at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching


def unit_rows(directions: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (zero rows stay zero)."""
    return torch.nn.functional.normalize(directions, dim=-1)


def cosine_matrix(true_directions: torch.Tensor, decoder_directions: torch.Tensor) -> torch.Tensor:
    """C = G Dᵀ of unit rows: (..., n, d) and (..., k, d) -> (..., n, k)."""
    for name, value in (("true_directions", true_directions), ("decoder_directions", decoder_directions)):
        if not isinstance(value, torch.Tensor) or value.ndim < 2:
            raise TypeError(f"{name} must be a tensor of shape (..., rows, d), got {type(value).__name__} of shape "
                            f"{tuple(getattr(value, 'shape', ()))}")
    shapes = f"true_directions {tuple(true_directions.shape)} and decoder_directions {tuple(decoder_directions.shape)}"
    if true_directions.shape[-1] != decoder_directions.shape[-1]:
        raise ValueError(f"{shapes} must share their last dimension (d)")
    try:
        torch.broadcast_shapes(true_directions.shape[:-2], decoder_directions.shape[:-2])
    except RuntimeError:
        raise ValueError(f"{shapes} have leading (instance) dimensions that do not match") from None
    return unit_rows(true_directions) @ unit_rows(decoder_directions).transpose(-1, -2)


def mmcs(cosines: torch.Tensor) -> float:
    """Mean max cosine similarity (Sharkey et al. 2022): mean over rows of max_j C_ij."""
    if cosines.shape[0] == 0:
        return float("nan")
    return cosines.max(dim=-1).values.mean().item()


class Assignment(NamedTuple):
    """A one-to-one matching of true features (rows) to latents (columns)."""

    latent: np.ndarray
    """Matched latent per true feature, (n,); -1 where the feature got none."""
    cosine: np.ndarray
    """Matched cosine per true feature, (n,); 0 where the feature got none."""


def hungarian(cosines: torch.Tensor | np.ndarray) -> Assignment:
    """The one-to-one assignment maximising Σ C_{i,π(i)} (scipy's linear_sum_assignment)."""
    C = np.asarray(cosines.detach().cpu().double() if isinstance(cosines, torch.Tensor) else cosines, dtype=float)
    latent = np.full(C.shape[0], -1, dtype=np.int64)
    cosine = np.zeros(C.shape[0])
    if C.size:
        rows, cols = linear_sum_assignment(C, maximize=True)
        latent[rows] = cols
        cosine[rows] = C[rows, cols]
    return Assignment(latent, cosine)


def recovered(matched_cosine: np.ndarray, threshold: float = 0.9) -> float:
    """recovered@τ: fraction of true features whose matched cosine is >= τ."""
    if len(matched_cosine) == 0:
        return float("nan")
    return float(np.mean(matched_cosine >= threshold))


# At 16,384 features × 65,536 latents, C has 10⁹ entries (4 GB in float32) and the exact dense Hungarian
# would take hours. So C is computed in row chunks and only each row's and each column's best few entries
# are kept. Above EXACT_LIMIT, the assignment is restricted to those candidate edges (scipy's LAPJVsp); it
# equals the exact one whenever the optimal matching uses candidate edges only, as it does for a dictionary
# whose latents sit near features (tests/test_evaluate.py checks it).

EXACT_LIMIT = 4096 * 4096  # largest n × k for which "auto" matching uses the exact dense Hungarian
CANDIDATES = 16  # latents kept per true feature as candidate edges of the sparse matching
CHUNK_ENTRIES = 1 << 25  # cosines computed at once (inst × rows × k); 128 MB in float32


class CosineTops(NamedTuple):
    """The largest cosines of C = G Dᵀ in each row and each column, for every instance, descending."""

    row_cos: torch.Tensor  # (inst, n, r)
    row_latent: torch.Tensor  # their latents, (inst, n, r)
    col_cos: torch.Tensor  # over the masked-in features, (inst, k, c); -inf pads
    col_feature: torch.Tensor  # their features, (inst, k, c)


def cosine_tops(true_directions: torch.Tensor, decoder_directions: torch.Tensor, row_mask: torch.Tensor | None = None,
                per_row: int = CANDIDATES, per_col: int = 4, chunk_entries: int = CHUNK_ENTRIES,
                absolute: bool = False) -> CosineTops:
    """The `per_row` top cosines of each row and `per_col` of each column of C = G Dᵀ (of |C| if `absolute`),
    for G (inst, n, d) and D (inst, k, d), computed `chunk_entries` at a time without ever holding C.
    `row_mask` (inst, n) bool keeps rows out of the column tops (e.g. features not graded)."""
    G, D = unit_rows(true_directions), unit_rows(decoder_directions)
    n_inst, n, _ = G.shape
    k = D.shape[1]
    per_row, per_col = min(per_row, k), min(per_col, n)
    row_mask = torch.ones(n_inst, n, dtype=torch.bool, device=G.device) if row_mask is None else row_mask.to(G.device)
    rows = max(1, chunk_entries // max(1, n_inst * k))
    row_cos, row_latent = [], []
    col_cos = torch.full((n_inst, 0, k), -torch.inf, device=G.device)
    col_feature = torch.zeros((n_inst, 0, k), dtype=torch.long, device=G.device)
    for start in range(0, n, rows):
        C = G[:, start:start + rows] @ D.transpose(-1, -2)  # (inst, rows, k)
        C = C.abs_() if absolute else C
        values, index = C.topk(per_row, dim=-1)
        row_cos.append(values)
        row_latent.append(index)
        C = C.masked_fill_(~row_mask[:, start:start + rows, None], -torch.inf)
        values, index = C.topk(min(per_col, C.shape[1]), dim=1)
        col_cos, order = torch.cat([col_cos, values], 1).topk(min(per_col, col_cos.shape[1] + values.shape[1]), dim=1)
        col_feature = torch.cat([col_feature, index + start], 1).gather(1, order)
    return CosineTops(torch.cat(row_cos, 1), torch.cat(row_latent, 1), col_cos.transpose(1, 2),
                      col_feature.transpose(1, 2))


def _sparse_assignment(n_rows: int, n_cols: int, rows: np.ndarray, cols: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Max-Σcos one-to-one matching on candidate edges (n_rows <= n_cols): column per row, -1 if none.

    Each row also gets a private dummy column, so a full matching always exists; a row matched to it had all
    its candidates taken. The dummy costs more than any alternating path of real edges can save, so the number
    of real matches is maximised first, as in the dense assignment where every row gets a latent.
    """
    _, first = np.unique(rows.astype(np.int64) * n_cols + cols, return_index=True)  # the candidate lists overlap
    rows, cols, cos = rows[first], cols[first], cos[first].astype(np.float64)
    dummy_cost = 4.0 * (n_rows + 1)  # real costs lie in [1, 3]; an alternating path has < 2 n_rows edges
    weight = np.concatenate([2.0 - cos, np.full(n_rows, dummy_cost)])  # > 0: LAPJVsp reads zeros as no edge
    graph = coo_matrix((weight, (np.concatenate([rows, np.arange(n_rows)]),
                                 np.concatenate([cols, n_cols + np.arange(n_rows)]))),
                       shape=(n_rows, n_cols + n_rows)).tocsr()
    row_index, col_index = min_weight_full_bipartite_matching(graph)
    matched = np.full(n_rows, -1, dtype=np.int64)
    matched[row_index] = np.where(col_index < n_cols, col_index, -1)
    return matched


Edges = tuple[np.ndarray, np.ndarray, np.ndarray]  # candidate edges: row indices, column indices, cosines


def candidate_edges(tops: CosineTops, instance: int = 0, rows: np.ndarray | None = None) -> Edges:
    """The candidate edges of one instance: each row's best latents and each latent's best rows; `rows`
    (sorted feature indices) keeps only those rows, renumbered 0.. in that order."""
    row_latent, col_feature = tops.row_latent[instance].cpu().numpy(), tops.col_feature[instance].cpu().numpy()
    row_cos, col_cos = tops.row_cos[instance].double().cpu().numpy(), tops.col_cos[instance].double().cpu().numpy()
    n, k = row_latent.shape[0], col_feature.shape[0]
    feature = np.concatenate([np.repeat(np.arange(n), row_latent.shape[1]), col_feature.reshape(-1)])
    latent = np.concatenate([row_latent.reshape(-1), np.repeat(np.arange(k), col_feature.shape[1])])
    cos = np.concatenate([row_cos.reshape(-1), col_cos.reshape(-1)])
    keep = np.isfinite(cos)  # -inf pads columns with fewer rows than asked for
    if rows is not None:
        position = np.full(n, -1)
        position[rows] = np.arange(len(rows))
        feature = position[feature]
        keep &= feature >= 0
    return feature[keep], latent[keep], cos[keep]


def _sparse_match(G: torch.Tensor, D: torch.Tensor, candidates: int, exact_limit: int, edges: Edges | None,
                  absolute: bool = False) -> np.ndarray:
    """Column per row of the sparse assignment, for unit G (n, d), D (k, d) with n <= k; rows whose candidates
    were all taken are matched again among the unused columns, with fresh candidates (exactly, once few)."""
    n, k = G.shape[0], D.shape[0]
    if edges is None:
        edges = candidate_edges(cosine_tops(G[None], D[None], per_row=candidates, absolute=absolute))
    matched = _sparse_assignment(n, k, *edges)
    left = np.flatnonzero(matched < 0)
    if len(left):
        free = np.setdiff1d(np.arange(k), matched[matched >= 0])
        sub = match(G[torch.as_tensor(left, device=G.device)], D[torch.as_tensor(free, device=G.device)],
                    candidates=candidates, exact_limit=exact_limit, absolute=absolute)
        matched[left] = np.where(sub.assignment.latent >= 0, free[sub.assignment.latent.clip(0)], -1)
    return matched


class Match(NamedTuple):
    """A matching and how it was found."""

    assignment: Assignment
    method: str
    """"exact" (dense Hungarian) or "sparse" (candidate edges, LAPJVsp)."""


def match(true_directions: torch.Tensor, decoder_directions: torch.Tensor, method: str = "auto",
          candidates: int = CANDIDATES, exact_limit: int = EXACT_LIMIT,
          edges: Edges | None = None, absolute: bool = False) -> Match:
    """The one-to-one assignment of true features G (n, d) to latents D (k, d) maximising Σ C_{i,π(i)}.

    method: "exact" (dense Hungarian), "sparse" (the Hungarian on candidate edges, LAPJVsp: each feature's
    `candidates` best latents and each latent's 4 best features, or `edges` when already known, see
    `candidate_edges`) or "auto" (exact while n × k <= exact_limit). absolute: maximise Σ |C_{i,π(i)}| and
    report |C| (SynthSAEBench's MCC; `edges` must then hold |C|).
    """
    if method not in ("auto", "exact", "sparse"):
        raise ValueError(f"method must be 'auto', 'exact' or 'sparse', got {method!r}")
    G, D = unit_rows(true_directions), unit_rows(decoder_directions)
    n, k = G.shape[0], D.shape[0]
    if method == "exact" or (method == "auto" and n * k <= exact_limit) or min(n, k) == 0:
        C = G.double() @ D.double().T
        return Match(hungarian((C.abs() if absolute else C).cpu().numpy()), "exact")
    if n <= k:
        latent = _sparse_match(G, D, candidates, exact_limit, edges, absolute)
    else:  # more features than latents: match each latent to a feature, then invert
        flipped = None if edges is None else (edges[1], edges[0], edges[2])
        feature_of_latent = _sparse_match(D, G, candidates, exact_limit, flipped, absolute)
        latent = np.full(n, -1, dtype=np.int64)
        has = feature_of_latent >= 0
        latent[feature_of_latent[has]] = np.flatnonzero(has)
    cosine = np.zeros(n)
    has = latent >= 0
    index = torch.as_tensor(np.flatnonzero(has), device=G.device)
    cosine[has] = (G[index].double() * D[torch.as_tensor(latent[has], device=G.device)].double()).sum(-1).cpu().numpy()
    return Match(Assignment(latent, np.abs(cosine) if absolute else cosine), "sparse")

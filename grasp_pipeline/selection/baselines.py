"""Reference selections: additive top-k by a per-example score, and uniformly random draws."""

from __future__ import annotations

import numpy as np

from .base import Selection
from .constraints import Constraints, allowed_mask, codes, rank_within_group


def top_k(scores: np.ndarray, budget: int, excluded: np.ndarray | None = None, *,
          groups: np.ndarray | None = None, max_per_group: int = 0,
          content: np.ndarray | None = None) -> Selection:
    """Returns the additive selection: the `budget` highest scores (ties broken by row order), at most
    `max_per_group` from each value of `groups` when both are given, and at most one row per
    value of `content` (content hashes: exact duplicates) when it is given.

    With `content`, rows are walked in score order under the grasp greedy's `Constraints` (a
    taken row closes its duplicates; a row refused by a full group closes nothing), so the
    constraints mean the same for top-k as for `grasp`.
    """
    masked = np.where(allowed_mask(len(scores), excluded), scores, -np.inf)
    order = np.argsort(-masked, kind="stable")
    order = order[np.isfinite(masked[order])]
    if content is not None:
        return _top_k_constrained(scores, order, budget, groups, max_per_group, content)
    if groups is not None and max_per_group:
        order = order[rank_within_group(codes(np.asarray(groups))[order]) < max_per_group]
    order = order[:budget]
    return Selection(order, scores[order])


def _top_k_constrained(scores: np.ndarray, order: np.ndarray, budget: int, groups, max_per_group: int,
                       content: np.ndarray) -> Selection:
    """Returns the first `budget` rows of `order` that the quota and content constraints still allow."""
    cons = Constraints(len(scores), domains=groups, max_per_domain=max_per_group if groups is not None else 0,
                       content=content)
    rows = []
    for row in order.tolist():
        if len(rows) == budget:
            break
        if cons.penalty[row] == 0:
            rows.append(row)
            cons.take(row)
    rows = np.asarray(rows, dtype=order.dtype)
    return Selection(rows, scores[rows])


def random_selection(n: int, budget: int, seed: int, excluded: np.ndarray | None = None) -> Selection:
    """Returns a uniformly random selection of `budget` allowed rows (seeded)."""
    candidates = np.flatnonzero(allowed_mask(n, excluded))
    rows = np.random.default_rng(seed).choice(candidates, size=min(budget, len(candidates)), replace=False)
    return Selection(rows, np.zeros(len(rows)))

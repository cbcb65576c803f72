"""Reference selections: additive top-k by a per-example score, and uniformly random draws."""

from __future__ import annotations

import numpy as np

from .base import Selection
from .constraints import allowed_mask, codes, rank_within_group


def top_k(scores: np.ndarray, budget: int, excluded: np.ndarray | None = None, *,
          groups: np.ndarray | None = None, max_per_group: int = 0) -> Selection:
    """Returns the additive selection: the `budget` highest scores (ties broken by row order), at most
    `max_per_group` from each value of `groups` when both are given."""
    masked = np.where(allowed_mask(len(scores), excluded), scores, -np.inf)
    order = np.argsort(-masked, kind="stable")
    if groups is not None and max_per_group:
        order = order[rank_within_group(codes(np.asarray(groups))[order]) < max_per_group]
    order = order[:budget]
    order = order[np.isfinite(masked[order])]
    return Selection(order, scores[order])


def random_selection(n: int, budget: int, seed: int, excluded: np.ndarray | None = None) -> Selection:
    """Returns a uniformly random selection of `budget` allowed rows (seeded)."""
    candidates = np.flatnonzero(allowed_mask(n, excluded))
    rows = np.random.default_rng(seed).choice(candidates, size=min(budget, len(candidates)), replace=False)
    return Selection(rows, np.zeros(len(rows)))

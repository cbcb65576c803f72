"""Reference selections: additive top-k by a per-example score, and uniformly random draws."""

from __future__ import annotations

import numpy as np

from .base import Selection
from .composition import mixture_counts
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


def random_selection(n: int, budget: int, seed: int, excluded: np.ndarray | None = None, *,
                     domains: np.ndarray | None = None, natural: dict[str, float] | None = None) -> Selection:
    """Returns a random selection of `budget` allowed rows (seeded): what a random sample of the corpus
    holds. With `domains` and the `natural` mixture ({domain: weight}, corpus.natural) it has the
    natural mixture's per-domain counts (largest remainder, each within the domain's allowed rows) and
    random members inside each domain — the pool is capped per domain, so a uniform draw from it would
    have the cap's composition, not the corpus's; without them it is uniform over the pool."""
    allowed = allowed_mask(n, excluded)
    rng = np.random.default_rng(seed)
    if natural is None or domains is None:
        candidates = np.flatnonzero(allowed)
        rows = rng.choice(candidates, size=min(budget, len(candidates)), replace=False)
        return Selection(rows, np.zeros(len(rows)))
    names = sorted(set(np.asarray(domains).tolist()))
    members = {d: np.flatnonzero(allowed & (domains == d)) for d in names}
    counts = mixture_counts(np.array([natural[d] for d in names]), names, min(budget, int(allowed.sum())),
                            {d: len(m) for d, m in members.items()})
    rows = rng.permutation(np.concatenate([rng.choice(members[d], size=counts[d], replace=False) for d in names]))
    return Selection(rows, np.zeros(len(rows)))

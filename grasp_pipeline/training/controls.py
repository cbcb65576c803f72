"""Equal-budget controls: what a user gets for the same retrainings without GRASP (DESIGN §6).

GRASP's selection is the best of its loop's candidates by *realised* dev gain, so part of any
win can come from retraining candidates and keeping the best, which needs no surrogate. The
controls answer that:

- `random_pick`: the loop's own procedure with random proposals — in each round as many
  mixtures (the natural mix, then Dirichlet(concentration · natural) draws, RegMix's proposal
  distribution) and as many selections (random members at the counts of that procedure's best
  mixture so far) as GRASP proposes, retrained with the same seeds and picked by the same rule;
- `filter_dedup`: what a data engineer does without attribution — exact and near-duplicate
  removal plus a quality filter (drop the highest-loss share of each domain under the reference
  model, the share chosen on dev), then random members at the GRASP pick's counts;
- `random_at_counts` (drawn by curated_selection): random members at the GRASP pick's counts,
  what its composition alone buys.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from ..mixture.objective import project_capped_simplex


def random_mixtures(natural: np.ndarray, caps: np.ndarray, count: int, concentration: float,
                    seed: int) -> list[np.ndarray]:
    """`count` mixtures: the natural mix first (GRASP's path starts there too), then Dirichlet draws
    around it, projected onto the capped simplex (no domain above the share its pool can supply)."""
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.maximum(concentration * natural, 1e-3), size=max(0, count - 1))
    return [natural.copy()] + [project_capped_simplex(d, caps) for d in draws]


def counts_of(groups: np.ndarray, rows: np.ndarray) -> dict:
    """{group: rows of `rows` in it}: a selection's composition (per domain, or per domain×label cell)."""
    return dict(Counter(np.asarray(groups)[np.asarray(rows)].tolist()))


def random_at_counts(groups: np.ndarray, counts: dict, seed: int, *, content: np.ndarray | None = None,
                     keep: np.ndarray | None = None) -> np.ndarray:
    """Pool rows drawn uniformly without replacement inside each group, `counts[group]` of them.

    `content` (hashes): one row per content at most, as GRASP's candidates; `keep` (bool): the
    rows a filter left. A group left with fewer rows than its count gives all it has, and the
    shortfall is drawn from the other groups' remaining rows (the selection keeps its budget)."""
    groups = np.asarray(groups)
    eligible = np.ones(len(groups), bool) if keep is None else np.asarray(keep, bool).copy()
    if content is not None:  # the first row of each content stays eligible
        first = np.zeros(len(groups), bool)
        first[np.unique(np.asarray(content), return_index=True)[1]] = True
        eligible &= first
    rng = np.random.default_rng(seed)
    picked, short = [], 0
    for group in sorted(counts):
        rows = np.flatnonzero(eligible & (groups == group))
        take = min(int(counts[group]), len(rows))
        short += int(counts[group]) - take
        picked.append(rng.choice(rows, size=take, replace=False))
    rows = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    if short:
        rest = np.setdiff1d(np.flatnonzero(eligible), rows)
        rows = np.concatenate([rows, rng.choice(rest, size=min(short, len(rest)), replace=False)])
    return np.sort(rows.astype(np.int64))


def quality_filter(losses: np.ndarray, domains: np.ndarray, share: float) -> np.ndarray:
    """(n,) bool: False for the `share` of each domain's rows with the highest reference-model loss
    (garbled or off-distribution text; per domain, because languages and code differ in loss)."""
    keep = np.ones(len(losses), bool)
    if share <= 0:
        return keep
    losses, domains = np.asarray(losses, float), np.asarray(domains)
    for domain in np.unique(domains):
        rows = np.flatnonzero(domains == domain)
        drop = int(np.floor(share * len(rows)))
        if drop:
            keep[rows[np.argsort(-losses[rows], kind="stable")[:drop]]] = False
    return keep

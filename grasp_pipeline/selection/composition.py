"""Composition-first selection: the mixture decides how many examples each domain gives, the
residual greedy decides which.

The surrogate is trusted where its fit subsets went — random draws inside each domain at
varied domain shares — so a selection takes its per-domain counts from a mixture (the GRASP
optimum, or any other) and runs the residual greedy inside each domain under that quota
vector. Its trust region is measured against random draws *within each domain at those
counts*: the expected sketch sum of such a draw is Σ_d n_d μ_d and its variance per
coordinate Σ_d n_d σ²_d (N_d − n_d)/(N_d − 1) (without replacement). A selection then
contains its mixture's solution (strength → ∞ gives back a random draw at the mixture's
counts) and can only add to it.
"""

from __future__ import annotations

import numpy as np

from ..surrogates.data import NORMALISATIONS
from .base import Selection
from .constraints import allowed_mask
from .greedy import residual_greedy
from .objective import grasp_objective


def mixture_counts(weights: np.ndarray, names: list, budget: int, available: dict) -> dict:
    """{domain: count} of a mixture at `budget` (largest remainder), each at most its `available` rows.

    Counts a cap cuts are handed to the other domains in proportion to their weights, so the
    counts sum to the budget whenever the pool can fill it.
    """
    weights = np.asarray(weights, float)
    caps = np.array([available.get(name, 0) for name in names])
    counts = np.zeros(len(names), np.int64)
    for _ in range(len(names) + 1):
        left = budget - counts.sum()
        open_ = counts < caps
        if left <= 0 or not open_.any():
            break
        share = np.where(open_, weights, 0.0)
        share = share / share.sum() if share.sum() > 0 else open_ / open_.sum()
        raw = share * left
        add = np.floor(raw).astype(np.int64)
        add[np.argsort(-(raw - add), kind="stable")[: left - add.sum()]] += 1
        counts = np.minimum(counts + add, caps)
    return {name: int(c) for name, c in zip(names, counts)}


def label_balanced_cells(counts: dict, domains: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Splits every domain's count over its labels so that the label totals differ by at most one
    (as far as each (domain, label) cell's rows allow); returns (the cell of every row, {cell: count}).

    Classification pools balance labels in every score-based selection (`selection.balance_labels`);
    with cells as the quota groups a composition-first selection keeps its mixture's domain counts
    and that balance at once.
    """
    cells = np.array([f"{d}\x1f{label}" for d, label in zip(domains, labels)])
    names, rows_in = np.unique(cells, return_counts=True)
    available = dict(zip(names.tolist(), rows_in.tolist()))
    label_names = sorted({str(label) for label in labels})
    totals = dict.fromkeys(label_names, 0)
    taken: dict = {}
    for domain in sorted(counts):
        for _ in range(int(counts[domain])):
            open_ = [label for label in label_names
                     if available.get(f"{domain}\x1f{label}", 0) > taken.get(f"{domain}\x1f{label}", 0)]
            if not open_:
                break
            label = min(open_, key=lambda name: totals[name])  # the least-filled label (first on ties)
            cell = f"{domain}\x1f{label}"
            taken[cell], totals[label] = taken.get(cell, 0) + 1, totals[label] + 1
    return cells, taken


def stratified_trust_terms(pool_sketch: np.ndarray, domains: np.ndarray, counts: dict, scale: float,
                           used: np.ndarray, strength: float,
                           excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Δv, ΔD) adding −strength·Σ_j (s_j − E s_j)² / Var s_j to the objective N⟨v, s⟩ − N²‖s‖²_D.

    E and Var are those of a random draw without replacement of `counts[d]` allowed rows from
    every domain d, on the `used` coordinates; strength is in utility per squared standard
    deviation, as `trust_region_terms`'.
    """
    z = np.asarray(pool_sketch, float)
    allowed = allowed_mask(len(z), excluded)
    mean, var = np.zeros(z.shape[1]), np.zeros(z.shape[1])
    for domain, n_d in counts.items():
        rows = z[allowed & (domains == domain)]
        if n_d == 0 or not len(rows):
            continue
        mean += n_d * rows.mean(0)
        var += n_d * rows.var(0) * max(0.0, (len(rows) - n_d) / max(1, len(rows) - 1))
    inverse = np.zeros(z.shape[1])
    live = used & (var > 0)
    inverse[live] = 1.0 / var[live]
    return 2 * strength * inverse * mean / scale, strength * inverse / scale ** 2


def composition_first_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                                weights: np.ndarray, domains: np.ndarray, counts: dict, *,
                                trust_region: float = 0.0, method: str = "lazy", content: np.ndarray | None = None,
                                excluded: np.ndarray | None = None) -> Selection:
    """The residual greedy under the GRASP surrogates with per-domain quotas `counts` (their sum is
    the budget), and a trust region around random within-domain draws at those counts."""
    budget = int(sum(counts.values()))
    v, d = grasp_objective(grasp_params, task_sketch, weights, pool_sketch.shape[1])
    scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
    if trust_region > 0:
        dv, dd = stratified_trust_terms(pool_sketch, domains, counts, scale, (v != 0) | (d > 0), trust_region,
                                        excluded)
        v, d = v + dv, d + dd
    return residual_greedy(pool_sketch, v, d, scale, budget, domains=domains, max_per_domain=counts,
                           content=content, excluded=excluded, method=method)

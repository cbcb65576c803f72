"""Curation: choose a budget of B pool examples that maximises the task-weighted surrogate.

At a fixed budget, size and normalisation N = N(B) are constants, so GRASP's objective is
    Σ_t w_t Û_t(S) = N⟨v, s⟩ − N²‖s‖²_D + const,   s = Σ_{i∈S} z_i,
with v = Σ_t w_t b_t q_t and D = Σ_t w_t C_t (diagonal). Completing the square, this is
−‖N·s − r*‖²_D with target r* = D⁻¹v/2: matching pursuit on the residual r = r* − N·s.
Each greedy step adds the example with the largest gain
    N⟨v, z_i⟩ − N²(2⟨z_i, D s⟩ + ‖z_i‖²_D),
so redundant examples (aligned with what is already in S) lose value. With D = 0 it is
additive top-k by ⟨v, z_i⟩.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .surrogate import NORMALISATIONS


@dataclass(frozen=True)
class SelectionParams:
    budget_fraction: float = 0.1
    random_seeds: tuple[int, ...] = (0, 1, 2)
    task_weights: dict[str, float] = field(default_factory=dict)  # missing tasks weigh 1
    max_per_domain: int = 0  # 0 = no quota
    exclude_example_ids: tuple[int, ...] = ()
    dedup_content: bool = True


@dataclass
class Selection:
    rows: np.ndarray  # pool row indices in selection order
    gains: np.ndarray  # objective gain of each step (score for top-k methods)


def task_weight_vector(tasks: list[str], weights: dict[str, float]) -> np.ndarray:
    """Returns normalised task weights (missing tasks weigh 1)."""
    unknown = set(weights) - set(tasks)
    if unknown:
        raise ValueError(f"task_weights names unknown tasks {sorted(unknown)}; tasks are {tasks}")
    w = np.array([float(weights.get(t, 1.0)) for t in tasks])
    if not np.isfinite(w).all() or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"task_weights must be finite, non-negative and not all zero; got {weights}")
    return w / w.sum()


def grasp_objective(grasp_params: list[dict], task_sketch: np.ndarray, weights: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (v, D): the weighted alignment vector (k,) and penalty diagonal (k,)."""
    v = sum(w * p["b"] * q for w, p, q in zip(weights, grasp_params, task_sketch))
    d = sum(w * np.broadcast_to(np.asarray(p["penalty"], float), (k,)) for w, p in zip(weights, grasp_params))
    return np.asarray(v, float), np.asarray(d, float)


def _allowed_mask(n: int, excluded: np.ndarray | None) -> np.ndarray:
    allowed = np.ones(n, bool)
    if excluded is not None:
        allowed[excluded] = False
    return allowed


def residual_greedy(pool_sketch: np.ndarray, v: np.ndarray, d: np.ndarray, scale: float,
                    budget: int, *, domains: np.ndarray | None = None, max_per_domain: int = 0,
                    content: np.ndarray | None = None, excluded: np.ndarray | None = None) -> Selection:
    """Exact greedy maximisation of scale⟨v, s⟩ − scale²‖s‖²_D (see module doc).

    Optional constraints: at most `max_per_domain` per domain, one example per content hash,
    never the `excluded` rows. Returns fewer than `budget` rows only if constraints run out.
    """
    z = pool_sketch.astype(np.float64)
    linear = scale * (z @ v)  # N⟨v, z_i⟩
    self_penalty = scale ** 2 * (z ** 2) @ d  # N²‖z_i‖²_D
    allowed = _allowed_mask(len(z), excluded)
    s = np.zeros(z.shape[1])
    taken_per_domain: dict = {}
    rows, gains = [], []
    while len(rows) < budget and allowed.any():
        gain = linear - self_penalty - 2 * scale ** 2 * (z @ (d * s))
        gain[~allowed] = -np.inf
        best = int(np.argmax(gain))
        rows.append(best)
        gains.append(float(gain[best]))
        s += z[best]
        allowed[best] = False
        if domains is not None and max_per_domain:
            taken_per_domain[domains[best]] = taken_per_domain.get(domains[best], 0) + 1
            if taken_per_domain[domains[best]] >= max_per_domain:
                allowed &= domains != domains[best]
        if content is not None:
            allowed &= content != content[best]
    return Selection(np.asarray(rows, int), np.asarray(gains))


def top_k(scores: np.ndarray, budget: int, excluded: np.ndarray | None = None) -> Selection:
    """Additive selection: the `budget` highest scores (ties broken by row order)."""
    masked = np.where(_allowed_mask(len(scores), excluded), scores, -np.inf)
    order = np.argsort(-masked, kind="stable")[:budget]
    order = order[np.isfinite(masked[order])]
    return Selection(order, scores[order])


def random_selection(n: int, budget: int, seed: int, excluded: np.ndarray | None = None) -> Selection:
    """A uniformly random selection of `budget` allowed rows (seeded)."""
    candidates = np.flatnonzero(_allowed_mask(n, excluded))
    rows = np.random.default_rng(seed).choice(candidates, size=min(budget, len(candidates)), replace=False)
    return Selection(rows, np.zeros(len(rows)))


def grasp_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                    weights: np.ndarray, budget: int, **constraints) -> Selection:
    """Residual-greedy selection under the fitted GRASP surrogates (normalisation at budget)."""
    v, d = grasp_objective(grasp_params, task_sketch, weights, pool_sketch.shape[1])
    scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
    return residual_greedy(pool_sketch, v, d, scale, budget, **constraints)

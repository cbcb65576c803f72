"""Mixture optimisation: domain weights π on the simplex that maximise the expected surrogate.

Drawing n_d = π_d·B examples from each domain d (domain mean sketch μ_d, per-coordinate
within-domain variance σ²_d), the expected sketch sum and its expected square are
    E[s] = B·Mπ,    E[s_j²] = (B·Mπ)_j² + B·Σ_d π_d σ²_dj,
so the task-weighted expected GRASP utility at budget B is the concave quadratic
    f(π) = const + N·B·vᵀMπ − N²·(B²·πᵀMᵀDMπ + B·Σ_d π_d ⟨σ²_d, D⟩),
maximised exactly over {π ≥ 0, Σπ = 1, π_d ≤ cap_d} with SLSQP (a small convex QP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ..selection.objective import grasp_objective
from ..surrogates.data import NORMALISATIONS, SIZE_TERMS


@dataclass
class DomainStats:
    domains: list[str]
    counts: np.ndarray  # (D,)
    means: np.ndarray  # (D, k)
    variances: np.ndarray  # (D, k)


def domain_stats(pool_sketch: np.ndarray, domains: np.ndarray) -> DomainStats:
    names = sorted(set(domains.tolist()))
    z = pool_sketch.astype(np.float64)
    return DomainStats(names, np.array([(domains == d).sum() for d in names]),
                       np.stack([z[domains == d].mean(0) for d in names]),
                       np.stack([z[domains == d].var(0) for d in names]))


class MixtureObjective:
    """The expected task-weighted GRASP utility f(π) at budget B, in utility units."""

    def __init__(self, stats: DomainStats, task_sketch: np.ndarray, grasp_params: list[dict],
                 weights: np.ndarray, budget: int):
        k = stats.means.shape[1]
        self.v, self.d = grasp_objective(grasp_params, task_sketch, weights, k)
        self.scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
        size_fn = SIZE_TERMS[grasp_params[0]["size_term"]]
        size_value = float(size_fn(np.array([budget]))[0]) if size_fn else 0.0
        self.constant = float(sum(w * (p["intercept"] + p["size_coef"] * size_value)
                                  for w, p in zip(weights, grasp_params)))
        self.budget = budget
        self.means, self.spread = stats.means.T, stats.variances @ self.d  # (k, D), (D,)

    def __call__(self, pi: np.ndarray) -> float:
        mean_sum = self.budget * self.means @ pi
        return float(self.constant + self.scale * self.v @ mean_sum
                     - self.scale ** 2 * (mean_sum ** 2 @ self.d + self.budget * self.spread @ pi))

    def gradient(self, pi: np.ndarray) -> np.ndarray:
        mean_sum = self.budget * self.means @ pi
        return (self.scale * self.budget * self.means.T @ self.v
                - self.scale ** 2 * (2 * self.budget * self.means.T @ (self.d * mean_sum)
                                     + self.budget * self.spread))


def optimise_mixture(objective: MixtureObjective, caps: np.ndarray) -> np.ndarray:
    """Returns π maximising the objective over the capped simplex."""
    n = len(caps)
    if caps.sum() < 1 - 1e-9:
        raise ValueError(f"domain caps sum to {caps.sum():.3f} < 1: the budget cannot be filled; "
                         "lower budget_fraction or raise max_repeats")
    start = caps / caps.sum()  # feasible: caps sum to ≥ 1, so every entry stays under its cap
    result = minimize(lambda p: -objective(p), start, jac=lambda p: -objective.gradient(p),
                      method="SLSQP", bounds=[(0.0, float(c)) for c in caps],
                      constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones(n)}],
                      options={"ftol": 1e-12, "maxiter": 500})
    pi = np.clip(result.x, 0, None)
    return np.minimum(pi / pi.sum(), caps)

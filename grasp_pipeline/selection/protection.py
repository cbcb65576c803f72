"""GRASP selection with its guards: a trust region around random composition and task protection."""

from __future__ import annotations

import numpy as np

from ..infra import progress
from ..surrogates.data import NORMALISATIONS
from .base import Selection
from .constraints import allowed_mask
from .greedy import residual_greedy
from .objective import grasp_objective, predicted_utilities


def trust_region_terms(pool_sketch: np.ndarray, budget: int, scale: float, used: np.ndarray,
                       strength: float, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Returns (Δv, ΔD) that add −strength·Σ_j (z̄_j − μ_j)²/σ_j² to the selection objective.

    z̄ = s/B is the selection's mean sketch, μ the allowed pool's mean and σ_j² the variance
    of z̄_j over random selections of B rows (without replacement), on the `used` coordinates.
    The surrogate was fitted on subsets near random composition; a selection far outside
    that region is an extrapolation it over-predicts (measured: tasks whose own data the
    selection thins out lose against random). Written in the objective's own form
    N⟨v, s⟩ − N²‖s‖²_D, the penalty is Δv = 2·strength·Tμ/(B·N), ΔD = strength·T/(B·N)²,
    T = diag(1/σ²) on `used`.
    """
    z = np.asarray(pool_sketch, float)[allowed_mask(len(pool_sketch), excluded)]
    n = len(z)
    mean, var = z.mean(0), z.var(0) * (n - budget) / max(1, (n - 1) * budget)
    inverse = np.zeros(z.shape[1])
    live = used & (var > 0)
    inverse[live] = 1.0 / var[live]
    return 2 * strength * inverse * mean / (budget * scale), strength * inverse / (budget * scale) ** 2


def grasp_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                    weights: np.ndarray, budget: int, *, method: str = "lazy", trust_region: float = 0.0,
                    **constraints) -> Selection:
    """Residual-greedy selection under the fitted GRASP surrogates (normalisation at budget).

    Returns the Selection of `residual_greedy` (constraints: domains, max_per_domain, content,
    excluded); `method` as there, "lazy" by default because it equals the exact greedy.
    `trust_region` > 0 adds `trust_region_terms` on the coordinates the surrogates use.
    """
    v, d = grasp_objective(grasp_params, task_sketch, weights, pool_sketch.shape[1])
    scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
    if trust_region > 0:
        dv, dd = trust_region_terms(pool_sketch, budget, scale, (v != 0) | (d > 0), trust_region,
                                    constraints.get("excluded"))
        v, d = v + dv, d + dd
    return residual_greedy(pool_sketch, v, d, scale, budget, method=method, **constraints)


def protected_grasp_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                              weights: np.ndarray, budget: int, *, spread: np.ndarray, rounds: int = 10,
                              rate: float = 1.0, margin: float = 0.0, random_draws: int = 16, seed: int = 0,
                              method: str = "lazy", trust_region: float = 0.0, **constraints) -> Selection:
    """GRASP selection that leaves no task predicted below a random selection of the budget.

    The weighted objective can sacrifice a task whose data the others do not want (on the
    embedded corpus: Chinese, at a few examples, while random selections keep ~1/9 of the
    budget for it). So, group-DRO style, the selection is redone with multiplicative
    task weights. A task's predicted gain is its predicted utility minus its predicted
    utility under random selections (mean of `random_draws` seeded draws of the same budget
    from the allowed rows), in units of its utility spread `spread`; after each round a task
    whose gain is below `margin` gets its weight multiplied by exp(rate · (margin − gain)).
    The returned round is the one with the fewest tasks short, ties broken by the predicted
    gain under the caller's `weights`. Only the surrogate is consulted: no retrained outcome is read.
    `stats` records the rounds, the final weights and the predicted standardised gains.
    """
    weights = np.asarray(weights, float)
    excluded = constraints.get("excluded")
    candidates = np.flatnonzero(allowed_mask(len(pool_sketch), excluded))
    rng = np.random.default_rng(seed)
    draws = [rng.choice(candidates, size=min(budget, len(candidates)), replace=False) for _ in range(random_draws)]
    z64 = np.asarray(pool_sketch, float)
    random_sums = np.stack([z64[rows].sum(0) for rows in draws])
    baseline = predicted_utilities(grasp_params, task_sketch, random_sums,
                                   np.array([len(r) for r in draws])).mean(0)
    current, best, best_key, history = weights.copy(), None, None, []
    rounds_done = progress.task("protection", total=max(1, rounds + 1), unit="round")
    for round_ in range(max(1, rounds + 1)):
        selection = grasp_selection(pool_sketch, task_sketch, grasp_params, current, budget, method=method,
                                    trust_region=trust_region, **constraints)
        predicted = predicted_utilities(grasp_params, task_sketch, z64[selection.rows].sum(0, keepdims=True),
                                        np.array([len(selection.rows)]))[0]
        gain = (predicted - baseline) / spread
        short = np.maximum(0.0, margin - gain)
        key = (-int(np.sum(short > 0)), float(weights @ gain))
        history.append({"round": round_, "tasks_short": int(np.sum(short > 0)), "weighted_gain": key[1]})
        rounds_done.advance(tasks_short=history[-1]["tasks_short"])
        if best_key is None or key > best_key:
            best, best_key = (selection, current.copy(), gain), key
        if not np.any(short > 0) or round_ == rounds:
            break
        current = current * np.exp(rate * short)
        current /= current.sum()
    rounds_done.close()
    selection, final_weights, gain = best
    selection.stats.update({"protect_rounds": len(history) - 1, "protect_history": history,
                            "protected_weights": final_weights.tolist(), "predicted_gain_vs_random": gain.tolist()})
    return selection

"""The selection objective: task weights and the GRASP surrogates folded into (v, D).

At a fixed budget, size and normalisation N = N(B) are constants, so GRASP's objective is
    f(S) = Σ_t w_t Û_t(S) − const = N⟨v, s⟩ − N²‖s‖²_D,   s = Σ_{i∈S} z_i,
with v = Σ_t w_t b_t q_t and D = Σ_t w_t C_t (diagonal). Completing the square, this is
−‖N·s − r*‖²_D with target r* = D⁻¹v/2: matching pursuit on the residual r = r* − N·s.
Each greedy step adds the example with the largest gain
    g_i(s) = a_i − 2N²⟨z_i, D s⟩,   a_i = N⟨v, z_i⟩ − N²‖z_i‖²_D,
so redundant examples (aligned with what is already in S) lose value. With D = 0 it is
additive top-k by ⟨v, z_i⟩. Optional constraints (`constraints`): per-domain quotas,
exclusion lists, one example per content hash.
"""

from __future__ import annotations

import numpy as np

from ..surrogates.grasp import grasp_subset_utility


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
    """Returns (v, D): the weighted alignment vector (k,) and penalty diagonal (k,).

    A surrogate fitted on some sketch columns only (`sketch_range` [start, stop): one
    checkpoint's block, or a prefix `sketch_dim`) contributes only to those coordinates;
    the rest of v and D is zero.
    """
    v, d = np.zeros(k), np.zeros(k)
    for w, p, q in zip(weights, grasp_params, task_sketch):
        start, stop = p.get("sketch_range") or (0, p.get("sketch_dim") or k)
        v[start:stop] += w * p["b"] * np.asarray(q, float)[start:stop]
        d[start:stop] += w * np.broadcast_to(np.asarray(p["penalty"], float), (stop - start,))
    return v, d


def predicted_utilities(grasp_params: list[dict], task_sketch: np.ndarray, sum_z: np.ndarray,
                        sizes: np.ndarray) -> np.ndarray:
    """Returns the (s, T) GRASP-predicted utility of every task for subsets given by sketch sums and sizes."""
    return np.column_stack([grasp_subset_utility(p, sum_z, sizes, q) for p, q in zip(grasp_params, task_sketch)])


def scaled_task_weights(grasp_params: list[dict], tasks: list[str], weights: np.ndarray,
                        task_scale: str) -> np.ndarray:
    """Returns the task weights for selection: `weights`, divided by each task's utility spread for "utility_std".

    The spread (recorded by the surrogate fit as `fit_utility_std`) is the standard deviation
    over `fit` subsets of the repeat-mean retrained utility, so it never sees holdout
    outcomes; the result is normalised to sum to 1.
    """
    if task_scale == "none":
        return weights
    if task_scale != "utility_std":
        raise ValueError(f"selection.task_scale must be 'utility_std' or 'none', not {task_scale!r}")
    if any("fit_utility_std" not in p for p in grasp_params):
        raise ValueError("the surrogates table predates fit_utility_std; rematerialise surrogates, or set "
                         "selection.task_scale = 'none'")
    spread = np.array([p["fit_utility_std"] for p in grasp_params])
    flat = [t for t, s in zip(tasks, spread) if not np.isfinite(s) or s <= 0]
    if flat:
        raise ValueError(f"task(s) {flat} have no utility spread over the fit subsets, so selection.task_scale = "
                         "'utility_std' cannot scale them; set task_scale = 'none'")
    scaled = weights / spread
    return scaled / scaled.sum()

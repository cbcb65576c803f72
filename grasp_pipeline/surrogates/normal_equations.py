"""Sign-constrained least squares from the normal equations: many small problems that share columns.

Cross-validation fits one candidate on K folds × T tasks. Its problems share every column
but one (the task's alignment A_t) and the target, so their Gram matrices share the big
block; each is solved exactly by block principal pivoting on the normal equations,
warm-started from the previous fold's active set. `bounded_least_squares` (least_squares.py)
is the per-problem reference these functions equal: the same unit-RMS scaling, the same
ridge, the same projection of the free columns (`free_column_basis`), the same optimum.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.optimize import nnls

from .least_squares import free_column_basis


def unit_rms(columns: np.ndarray) -> np.ndarray:
    """Returns each column's root-mean-square over rows (1 where a column is all zero)."""
    scale = np.sqrt((columns ** 2).mean(0))
    return np.where(scale == 0, 1.0, scale)


def nnls_normal_equations(gram: np.ndarray, rhs: np.ndarray,
                          passive: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Solves min ½βᵀGβ − cᵀβ subject to β ≥ 0 for a positive-definite G (with G = XᵀX and
    c = Xᵀy that is min ‖Xβ − y‖², β ≥ 0); returns (β, its passive set β > 0).

    Block principal pivoting (Kim & Park, SIAM J. Sci. Comput. 33, 2011): exchange every
    variable that breaks the KKT conditions at once, fall back to one at a time (Murty's
    rule, finite for positive-definite G) when that stops shrinking the breaking set. The
    optimum is unique, so a warm start (`passive`, e.g. the previous fold's) changes only
    the number of rounds. Should rounding make it cycle, Lawson–Hanson finishes the job.
    """
    size = len(rhs)
    passive = np.zeros(size, bool) if passive is None else passive.copy()
    # a dual below −tol breaks KKT; rounding in Gβ is ~ε·size·‖G‖·‖β‖, far below this
    tol = 1e-10 * (np.abs(rhs).max() + np.abs(np.diag(gram)).max())
    fewest, chances = size + 1, 3
    for _ in range(5 * size + 10):
        beta = np.zeros(size)
        if passive.any():
            index = np.flatnonzero(passive)
            beta[index] = _solve_spd(gram.take(index, 0).take(index, 1), rhs[index])
        dual = gram @ beta - rhs
        breaking = (passive & (beta < 0)) | (~passive & (dual < -tol))
        count = int(breaking.sum())
        if count == 0:
            return beta, passive
        if count < fewest:
            fewest, chances = count, 3
            passive ^= breaking
        elif chances > 0:
            chances -= 1
            passive ^= breaking
        else:
            last = np.flatnonzero(breaking)[-1]
            passive[last] = ~passive[last]
    beta = _lawson_hanson(gram, rhs)
    return beta, beta > 0


def _solve_spd(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """G⁻¹c by Cholesky (one LAPACK call: these systems are small and many); by least squares
    where G is singular (a column that is all zero after the free columns are projected out,
    which Lawson–Hanson leaves at zero too)."""
    _, solution, info = _posv(gram, rhs)
    return solution if info == 0 else np.linalg.lstsq(gram, rhs, rcond=None)[0]


_posv = scipy.linalg.get_lapack_funcs("posv", dtype=np.float64)


def _lawson_hanson(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The same problem through `scipy.optimize.nnls` on a square root of G (G = RᵀR)."""
    values, vectors = np.linalg.eigh(gram)
    root = (vectors * np.sqrt(np.clip(values, 0, None))).T  # RᵀR = G
    target = np.linalg.lstsq(root.T, rhs, rcond=None)[0]  # Rᵀt = c
    return nnls(root, target, maxiter=50 * len(rhs))[0]


def fit_shared_columns(free: np.ndarray, task_columns: np.ndarray, shared: np.ndarray, targets: np.ndarray,
                       ridge: float, passive: list[np.ndarray] | None = None
                       ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fits every task t: min ‖[F a_t S]β − y_t‖² + ridge·n·Σ_{j∈S} β_j² (unit-RMS columns and
    target, n rows) with β ≥ 0 on a_t and S and F free; F (n, f), task columns a (n, T),
    shared S (n, s), targets y (n, T).

    Returns (β (T, f + 1 + s) in the input units, each task's passive set for a warm start):
    for each task, what `bounded_least_squares(column_stack([F, a_t, S]), y_t, …)` returns.
    """
    n, tasks = targets.shape
    scales = (unit_rms(free), unit_rms(task_columns), unit_rms(shared))
    target_scale = np.sqrt((targets ** 2).mean(0))
    target_scale = np.where(target_scale == 0, 1.0, target_scale)
    f, a, s, y = free / scales[0], task_columns / scales[1], shared / scales[2], targets / target_scale
    basis, solve_free = free_column_basis(f)
    def project(m):  # the residual after the free columns
        return m - basis @ (basis.T @ m)
    a_p, s_p, y_p = project(a), project(s), project(y)
    grams = np.empty((tasks, 1 + s.shape[1], 1 + s.shape[1]))  # [a_t S]ᵀ[a_t S] + ridge, per task
    grams[:, 1:, 1:] = s_p.T @ s_p + ridge * n * np.eye(s.shape[1])
    grams[:, 0, 1:] = grams[:, 1:, 0] = (s_p.T @ a_p).T
    grams[:, 0, 0] = (a_p ** 2).sum(0)
    rhs = np.column_stack([(a_p * y_p).sum(0), (s_p.T @ y_p).T])  # (T, 1 + s)
    bounded = np.zeros((tasks, 1 + s.shape[1]))
    passives = []
    for t in range(tasks):
        bounded[t], mine = nnls_normal_equations(grams[t], rhs[t], passive[t] if passive is not None else None)
        passives.append(mine)
    residual = y - a * bounded[:, 0] - s @ bounded[:, 1:].T  # (n, T)
    scaled = np.column_stack([np.column_stack([solve_free(residual[:, t]) for t in range(tasks)]).T, bounded])
    column_scale = np.column_stack([np.broadcast_to(scales[0], (tasks, len(scales[0]))), scales[1][:, None],
                                    np.broadcast_to(scales[2], (tasks, len(scales[2])))])
    return scaled / column_scale * target_scale[:, None], passives

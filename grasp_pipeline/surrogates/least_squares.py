"""The numerical kernel of every fit: least squares with sign constraints and a ridge."""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls


def bounded_least_squares(features: np.ndarray, target: np.ndarray, nonneg: np.ndarray,
                           ridge: np.ndarray) -> np.ndarray:
    """Solves min ‖Xβ − y‖² + Σ ridge_j β_j² with β_j ≥ 0 where nonneg_j; returns β.

    Columns and target are scaled to unit RMS first (positive scaling keeps the sign
    constraints), so ridge strengths mean the same thing for every feature.
    """
    col_scale = np.sqrt((features ** 2).mean(0))
    col_scale[col_scale == 0] = 1.0
    y_scale = np.sqrt((target ** 2).mean()) or 1.0
    x = features / col_scale
    y = target / y_scale
    if np.any(ridge > 0):
        penalised = np.flatnonzero(ridge > 0)
        extra = np.zeros((len(penalised), x.shape[1]))
        extra[np.arange(len(penalised)), penalised] = np.sqrt(ridge[penalised] * len(y))
        x, y = np.vstack([x, extra]), np.concatenate([y, np.zeros(len(penalised))])
    return nonneg_with_free_columns(x, y, nonneg) / col_scale * y_scale


def nonneg_with_free_columns(x: np.ndarray, y: np.ndarray, nonneg: np.ndarray) -> np.ndarray:
    """Solves min ‖xβ − y‖² with β ≥ 0 on the `nonneg` columns and the rest free; returns β.

    The free columns are projected out exactly (their optimum is a least-squares fit of the
    residual), which leaves a plain NNLS problem for Lawson–Hanson (`scipy.optimize.nnls`):
    ~100× faster than a general bounded solver on the diagonal-geometry fits. The projection
    uses a rank-revealing basis of the free columns (their SVD, singular values below the
    `numpy.linalg.lstsq` cutoff dropped), so collinear free columns — the size term φ(|S|) when
    every fit subset has the same size is a multiple of the intercept — project out only the
    space they span; the free coefficients are then the minimum-norm least-squares solution.
    """
    free, bounded = ~nonneg, nonneg
    beta = np.zeros(x.shape[1])
    if not bounded.any():
        beta[:] = np.linalg.lstsq(x, y, rcond=None)[0]
        return beta
    basis, solve_free = free_column_basis(x[:, free])
    def project(a):  # the residual after the free columns
        return a - basis @ (basis.T @ a)
    beta[bounded] = nnls(project(x[:, bounded]), project(y), maxiter=50 * x.shape[1])[0]
    if free.any():
        beta[free] = solve_free(y - x[:, bounded] @ beta[bounded])
    return beta


def free_column_basis(columns: np.ndarray):
    """Returns (an orthonormal basis (m, rank) of the span of `columns`, the minimum-norm
    least-squares solver r ↦ argmin_β ‖columns·β − r‖), both from one SVD of `columns`."""
    if columns.shape[1] == 0:
        return np.zeros((len(columns), 0)), lambda r: np.zeros(0)
    u, sv, vt = np.linalg.svd(columns, full_matrices=False)
    rank = int((sv > sv.max(initial=0.0) * max(columns.shape) * np.finfo(float).eps).sum())
    u, sv, vt = u[:, :rank], sv[:rank], vt[:rank]
    return u, lambda r: vt.T @ ((u.T @ r) / sv)

"""Evaluation metrics: rank and linear correlation that treat degenerate inputs explicitly."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Returns Spearman's ρ, or NaN when either side is constant or has < 3 points."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    if len(actual) < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return float("nan")
    return float(stats.spearmanr(predicted, actual).statistic)


def pearson(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Returns Pearson's r, or NaN when either side is constant or has < 3 points."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    if len(actual) < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return float("nan")
    return float(stats.pearsonr(predicted, actual).statistic)


def nan_mean(values) -> float:
    """Mean ignoring NaN; NaN when nothing is left (rather than numpy's warning)."""
    values = np.asarray(list(values), float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def split_half_ceiling(utility_a: np.ndarray, utility_b: np.ndarray) -> float:
    """Returns the noise ceiling √ρ(a, b) from two retrainings of the same subsets.

    ρ between two independent repeats estimates the reliability of one retraining; no
    surrogate can rank-correlate with a single noisy retraining better than √reliability.
    """
    rho = spearman(utility_a, utility_b)
    return float(np.sqrt(rho)) if rho > 0 else 0.0

"""Rank and linear correlation that treat degenerate inputs explicitly, and the noise ceiling.

A bottom module (numpy and scipy only): the surrogates' cross-validation and the evaluation
both score with it, so neither imports the other."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Returns Spearman's ρ, or NaN when either side is constant or has < 3 points."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    if len(actual) < 3 or np.ptp(predicted) == 0 or np.ptp(actual) == 0:
        return float("nan")
    return float(stats.spearmanr(predicted, actual).statistic)


def spearman_columns(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Returns Spearman's ρ of every column pair (m, T) × (m, T) → (T,): `spearman` column by
    column (NaN where a side is constant or m < 3), from one ranking of each side."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    rho = np.full(predicted.shape[1], np.nan)
    defined = (np.ptp(predicted, axis=0) > 0) & (np.ptp(actual, axis=0) > 0) if len(actual) >= 3 else rho > 0
    if defined.any():
        ranks = [stats.rankdata(side[:, defined], axis=0) for side in (predicted, actual)]
        centred = [r - r.mean(0) for r in ranks]
        rho[defined] = (centred[0] * centred[1]).sum(0) / np.sqrt((centred[0] ** 2).sum(0) * (centred[1] ** 2).sum(0))
    return rho


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


def nan_median(values) -> float:
    """Median ignoring NaN; NaN when nothing is left."""
    values = np.asarray(list(values), float)
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


def noise_ceiling(repeat_reliability: float, repeats: int) -> float:
    """Returns the highest correlation any predictor can reach against the mean of `repeats`
    retrainings, given the correlation ρ between two single retrainings.

    The mean of R repeats has reliability Rρ / (1 + (R − 1)ρ) (Spearman–Brown); a perfect
    predictor correlates with a noisy target at most √reliability.
    """
    if not np.isfinite(repeat_reliability) or repeat_reliability <= 0:
        return 0.0
    reliability = repeats * repeat_reliability / (1 + (repeats - 1) * repeat_reliability)
    return float(np.sqrt(reliability))

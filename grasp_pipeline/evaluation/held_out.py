"""Statistics of the held-out curation test: paired gains with bootstrap intervals, percentiles
within random selections, sign tests over tasks, and the composition-only floor.

Selections are trained with every (initialisation, data order) seed pair; each seed pair is
shared by every selection (common random numbers), so a selection's gain over random is
paired by seed: d_s = u_method,s − mean_r u_random r,s. Its interval resamples both sources
of noise at once — the seed pairs and the random selections (a two-way bootstrap). Mixture
samples j are paired with the natural mixture's sample j (same seed pair, same order key).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def selection_gains(method: np.ndarray, randoms: np.ndarray, *, bootstrap: int, seed: int,
                    level: float = 0.95) -> dict:
    """Paired gains of one selection over the mean of random selections.

    method: (S, T) utility per seed pair and task; randoms: (R, S, T). Returns per task
    (arrays of length T): `utility` (mean over seeds), `gain` (mean paired difference to the
    random mean), `ci_low`/`ci_high` (two-way bootstrap percentile interval at `level`),
    `percentile` (share of random selections whose seed-mean utility is below the method's);
    and over tasks: `mean_gain`, `mean_ci` (the same bootstrap of the mean over tasks).
    """
    method, randoms = np.asarray(method, float), np.asarray(randoms, float)
    s, r = method.shape[0], randoms.shape[0]
    gain = (method - randoms.mean(0)).mean(0)
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, method.shape[1]))
    for b in range(bootstrap):
        seeds, refs = rng.integers(0, s, s), rng.integers(0, r, r)
        draws[b] = (method[seeds] - randoms[refs][:, seeds].mean(0)).mean(0)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
    mean_low, mean_high = np.quantile(draws.mean(1), [alpha, 1 - alpha])
    percentile = (randoms.mean(1) < method.mean(0)).mean(0)
    return {"utility": method.mean(0), "gain": gain, "ci_low": low, "ci_high": high, "percentile": percentile,
            "mean_gain": float(gain.mean()), "mean_ci": (float(mean_low), float(mean_high))}


def paired_gains(values: np.ndarray, reference: np.ndarray, *, bootstrap: int, seed: int,
                 level: float = 0.95) -> dict:
    """Gains of (J, T) samples over (J, T) reference samples paired by row j (mixture samples).

    Returns the same keys as `selection_gains` except `percentile` (None); the interval
    resamples the pairs.
    """
    values, reference = np.asarray(values, float), np.asarray(reference, float)
    diff = values - reference
    rng = np.random.default_rng(seed)
    draws = np.stack([diff[rng.integers(0, len(diff), len(diff))].mean(0) for _ in range(bootstrap)])
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
    mean_low, mean_high = np.quantile(draws.mean(1), [alpha, 1 - alpha])
    return {"utility": values.mean(0), "gain": diff.mean(0), "ci_low": low, "ci_high": high, "percentile": None,
            "mean_gain": float(diff.mean()), "mean_ci": (float(mean_low), float(mean_high))}


def sign_test(gains: np.ndarray) -> tuple[int, float]:
    """(tasks ahead, two-sided sign-test p over the tasks whose gain is not exactly 0)."""
    gains = np.asarray(gains, float)
    ahead, behind = int((gains > 0).sum()), int((gains < 0).sum())
    if ahead + behind == 0:
        return 0, 1.0
    return ahead, float(stats.binomtest(ahead, ahead + behind, 0.5).pvalue)


def unit_histograms(units: list[np.ndarray], vocabulary: int) -> np.ndarray:
    """(n, vocabulary) counts of the predicted units (bytes, labels, tokens) of each example."""
    out = np.zeros((len(units), vocabulary))
    for i, u in enumerate(units):
        out[i] = np.bincount(np.asarray(u, np.int64), minlength=vocabulary)[:vocabulary]
    return out


def composition_floor(pool_hist: np.ndarray, pool_domains: np.ndarray, rows: np.ndarray,
                      test_hist: np.ndarray, test_task: np.ndarray, tasks: list[str],
                      smoothing: float = 0.5) -> np.ndarray:
    """(T,) loss of the composition-only model of one training subset on each task's examples.

    The model knows each example's domain and nothing else: for task t (its domain) it
    predicts every unit from the unigram of that domain's examples in the subset (add-
    `smoothing` counts; the whole subset's unigram when the subset holds none of the domain).
    A task's loss is the mean over its examples of the mean −log p per unit, as the workloads'
    losses are.
    """
    rows = np.asarray(rows)
    out = np.zeros(len(tasks))
    everything = pool_hist[rows].sum(0)
    for t, task in enumerate(tasks):
        mine = rows[pool_domains[rows] == task]
        counts = (pool_hist[mine].sum(0) if len(mine) else everything) + smoothing
        log_p = np.log(counts / counts.sum())
        h = test_hist[test_task == t]
        out[t] = float(np.mean(-(h @ log_p) / np.maximum(h.sum(1), 1)))
    return out

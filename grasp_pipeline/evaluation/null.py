"""Gains over random selections judged against the right null: a selection is one draw.

A selection's held-out utility carries three kinds of noise: which (initialisation, data
order) seeds trained it, *which subset it happens to be* — two random selections of one size
differ by far more than two seeds of one selection do — and which tasks were scored. The
paired bootstrap of `held_out.selection_gains` holds the selection and the tasks fixed, so a
plain random selection comes out "better than random" about half the time. Here the variance
of a gain has two parts, each estimated where it can be seen:

- **between selections** (seeds included): the spread σ² of the R random selections' own
  gains over the mean over tasks, measured directly — a method that is one draw has σ²(1 + 1/R)
  around its expectation, a mean of K draws σ²(1/K + 1/R);
- **task heterogeneity**: how much the method's gain varies over tasks *beyond* what a random
  draw's does. The task-bootstrap variance of a mean over tasks, var_t(g_t)/T, also contains
  selection noise spread over tasks (a selection with more of one domain gains on its task and
  loses on the others), which the first part already holds; so only its excess over the random
  draws' (scaled to K draws) is added, floored at 0.

A bootstrap that added a random draw's deviation to a task bootstrap of the method counted the
selection noise twice: on the demo's 20 random references its 95% interval was 2.4× wider than
the spread of the draws themselves (0/20 excluded 0); this one is calibrated on synthetic runs
with composition trade-offs (tests/test_null.py) and on those references. Intervals use the t
quantile with R − 1 degrees of freedom (σ² is estimated from R draws). A difference of two
methods adds both between-selection terms (the random mean cancels) and the excess
heterogeneity of the per-task difference: `difference`. Mixtures, whose J samples are paired
sample by sample, get the same construction with the samples as the draws: `paired_difference`.

A target (`weights`, the loop's task weights) makes every "mean over tasks" the weighted mean
Σ w_t g_t, and a task-resampling variance s²_w·Σ w_t², s²_w the weighted variance of the tasks'
gains (reliability weights; with equal weights the unweighted var_t/T): a task the target does
not weigh does not widen its interval, and a one-task target has no task term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Comparison:
    """One comparison's figures (mean over tasks, utility units = −loss in nats).

    `gain`: the observed difference; `ci`: its interval at `level` (t quantile); `p_value`:
    two-sided, from the same t distribution;
    `null_percentile`: for a gain over random, the share of random selections whose own gain
    over the others' mean is below it (None for a difference of two methods); `draws`: how many
    selections each side averaged (method, reference)."""

    gain: float
    ci: tuple[float, float]
    p_value: float
    null_percentile: float | None
    level: float
    draws: tuple[int, int]

    @property
    def excludes_zero(self) -> bool:
        return self.ci[0] > 0 or self.ci[1] < 0


def _as_draws(values: np.ndarray) -> np.ndarray:
    """(K, S, T) from (S, T) (one selection) or (K, S, T) (K selections averaged)."""
    values = np.asarray(values, float)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3:
        raise ValueError(f"utilities must be (S, T) or (K, S, T), got shape {values.shape}")
    return values


def _weights(weights: np.ndarray | None, tasks: int) -> np.ndarray:
    """The target's task weights, normalised (every task alike for None)."""
    if weights is None:
        return np.full(tasks, 1.0 / tasks)
    weights = np.asarray(weights, float)
    if weights.shape != (tasks,) or not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"task weights must be {tasks} finite non-negative numbers, not all 0; got {weights}")
    return weights / weights.sum()


def _leave_one_out_gains(randoms: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(R,) each random selection's mean gain over the mean of the other R − 1 (the null draws)."""
    per_selection = randoms.mean(1) @ w
    total = per_selection.sum()
    return per_selection - (total - per_selection) / (len(per_selection) - 1)


def _task_variance(per_task: np.ndarray, w: np.ndarray) -> float:
    """Variance of the w-weighted mean over tasks when tasks are resampled: s²_w·Σw², with s²_w =
    Σ w_t (g_t − ḡ_w)² / (1 − Σw²) the unbiased variance under reliability weights (for equal weights
    exactly var_t(ddof 1)/T). A task of weight 0 is not part of the target and does not enter; a
    target of one task has no task term (its question is that task, not tasks like it)."""
    w2 = float((w ** 2).sum())
    if len(per_task) < 2 or w2 >= 1 - 1e-12:
        return 0.0
    deviation = per_task - per_task @ w
    return float((w * deviation ** 2).sum() / (1 - w2) * w2)


def _null_parts(randoms: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(σ², v) per random draw: the between-selection variance of its (weighted) mean utility (seeds
    included), and the task-resampling variance of its per-task deviation from the population mean."""
    r = len(randoms)
    per_task = randoms.mean(1)  # (R, T)
    deviations = per_task - (per_task.sum(0) - per_task) / (r - 1)  # each draw against the other R − 1
    sigma2 = float(np.var(per_task @ w, ddof=1))
    v = float(np.mean([_task_variance(d, w) for d in deviations])) / (1 + 1 / (r - 1))
    return sigma2, v


def _summarise(gain: float, variance: float, dof: int, level: float, null_percentile, sizes) -> Comparison:
    sd = float(np.sqrt(max(variance, 0.0)))
    if sd == 0:
        return Comparison(float(gain), (float(gain), float(gain)), 1.0 if gain == 0 else 0.0, null_percentile, level,
                          sizes)
    q = float(stats.t.ppf(0.5 + level / 2, dof))
    p_value = float(2 * stats.t.sf(abs(gain) / sd, dof))
    return Comparison(float(gain), (float(gain - q * sd), float(gain + q * sd)), p_value, null_percentile, level,
                      sizes)


def gain_over_random(method: np.ndarray, randoms: np.ndarray, *, level: float = 0.95,
                     weights: np.ndarray | None = None) -> Comparison:
    """A method's gain over the mean of R random selections, judged as one draw (or K averaged).

    method: (S, T) or (K, S, T) utilities per seed pair and task, seed pairs shared with randoms:
    (R, S, T), R ≥ 3; weights: the target's (T,) task weights (None: every task alike)."""
    method, randoms = _as_draws(method), np.asarray(randoms, float)
    if randoms.ndim != 3 or randoms.shape[0] < 3:
        raise ValueError(f"randoms must be (R ≥ 3, S, T), got shape {randoms.shape}")
    if method.shape[1:] != randoms.shape[1:]:
        raise ValueError(f"method {method.shape[1:]} and randoms {randoms.shape[1:]} differ in (seeds, tasks)")
    k, r, w = len(method), len(randoms), _weights(weights, randoms.shape[2])
    per_task = method.mean((0, 1)) - randoms.mean((0, 1))
    gain = float(per_task @ w)
    sigma2, v = _null_parts(randoms, w)
    heterogeneity = max(0.0, _task_variance(per_task, w) - v * (1 / k + 1 / r))
    percentile = float((_leave_one_out_gains(randoms, w) < gain).mean())
    return _summarise(gain, sigma2 * (1 / k + 1 / r) + heterogeneity, r - 1, level, percentile, (k, r))


def difference(a: np.ndarray, b: np.ndarray, randoms: np.ndarray, *, level: float = 0.95,
               weights: np.ndarray | None = None) -> Comparison:
    """Method a minus method b (each (S, T) or (K, S, T), seed pairs shared), with both methods'
    between-selection terms measured on the random selections (R, S, T)."""
    a, b, randoms = _as_draws(a), _as_draws(b), np.asarray(randoms, float)
    if not (a.shape[1:] == b.shape[1:] == randoms.shape[1:]):
        raise ValueError(f"a {a.shape[1:]}, b {b.shape[1:]} and randoms {randoms.shape[1:]} differ in (seeds, tasks)")
    if randoms.shape[0] < 3:
        raise ValueError(f"randoms must hold ≥ 3 selections, got {randoms.shape[0]}")
    w = _weights(weights, randoms.shape[2])
    per_task = a.mean((0, 1)) - b.mean((0, 1))
    sigma2, v = _null_parts(randoms, w)
    scale = 1 / len(a) + 1 / len(b)
    heterogeneity = max(0.0, _task_variance(per_task, w) - v * scale)
    return _summarise(float(per_task @ w), sigma2 * scale + heterogeneity, len(randoms) - 1, level, None,
                      (len(a), len(b)))


def paired_difference(a: np.ndarray, b: np.ndarray, *, level: float = 0.95,
                      weights: np.ndarray | None = None) -> Comparison:
    """Mean of a − b for (J, T) utilities paired by row j (mixture sample j of both mixtures shares its
    seed pair and data order). A mixture is a distribution its J samples draw from: the sample-to-
    sample spread of the paired difference is the between-draw term, and the per-task difference's
    task-resampling variance beyond what that sampling noise explains is the heterogeneity term."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"paired utilities must be two (J ≥ 2, T) arrays of one shape, got {a.shape} and {b.shape}")
    diff, w = a - b, _weights(weights, a.shape[1])
    j = diff.shape[0]
    between = float(np.var(diff @ w, ddof=1) / j)
    noise = float(np.mean([_task_variance(d - diff.mean(0), w) for d in diff])) / j
    heterogeneity = max(0.0, _task_variance(diff.mean(0), w) - noise)
    return _summarise(float(diff.mean(0) @ w), between + heterogeneity, j - 1, level, None, (j, j))

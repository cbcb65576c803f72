"""Gains over random selections judged against the right null: a selection is one draw.

A selection's held-out utility carries three kinds of noise: which tasks were scored, which
(initialisation, data order) seeds trained it, and *which subset it happens to be* — two random
selections of the same size differ by far more than two seeds of one selection do. The paired
bootstrap of `held_out.selection_gains` resamples the first two and the random references, but
holds the selection fixed, so a plain random selection comes out "better than random" about
half the time. Here every interval also carries the between-selection term:

    draw_b = gain_b(method) − δ_b,   δ_b = a random selection's own gain over the random mean

with tasks, seed pairs and random references resampled together in each draw b (a
hierarchical bootstrap; tasks are a resampling unit, so the interval speaks of new tasks from
the same suite). A method that is the mean of K selections (a control such as 10 random
selections at the method's domain counts) gets the mean of K such δ, so averaging buys it a
narrower interval honestly. A difference of two methods subtracts both methods' draws, each
with its own δ: `difference`. Calibration (tests/test_null.py): where the method is itself a
random draw, its 95% interval excludes 0 in about 5% of simulated runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Comparison:
    """One comparison's figures (mean over tasks, utility units = −loss in nats).

    `gain`: the observed difference; `ci`: its bootstrap interval at `level`; `p_value`:
    two-sided, the share of draws on the other side of 0 (doubled, floored at 1/bootstrap);
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


def _leave_one_out_gains(randoms: np.ndarray) -> np.ndarray:
    """(R,) each random selection's mean gain over the mean of the other R − 1 (the null draws)."""
    per_selection = randoms.mean((1, 2))
    total = per_selection.sum()
    return per_selection - (total - per_selection) / (len(per_selection) - 1)


def _bootstrap(methods: list[tuple[float, np.ndarray]], randoms: np.ndarray, bootstrap: int, seed: int) -> np.ndarray:
    """(bootstrap,) draws of Σ_m sign_m · (gain_m − δ_m) for methods [(sign, (K, S, T)), …].

    Draw b resamples tasks, seed pairs and random references with replacement; a mean over
    resampled (seed, task) cells is a count-weighted mean, so all draws are one einsum."""
    r, s, t = randoms.shape
    rng = np.random.default_rng(seed)

    def counts(n: int) -> np.ndarray:  # (bootstrap, n) how often each index was drawn
        drawn = rng.integers(0, n, (bootstrap, n))
        return (drawn[:, :, None] == np.arange(n)).sum(1) / n

    seeds, tasks, refs = counts(s), counts(t), counts(r)
    ref_means = np.einsum("bs,bt,rst->br", seeds, tasks, randoms)  # (B, R) per-selection means
    random_mean = (ref_means * refs).sum(1)
    # one random selection's deviation from the random mean, scaled so its variance is the
    # between-selection variance σ² (deviations from an in-sample mean have σ²(R−1)/R)
    deviations = (ref_means - ref_means.mean(1, keepdims=True)) * np.sqrt(r / (r - 1))
    rows = np.arange(bootstrap)[:, None]
    total = np.zeros(bootstrap)
    for sign, values in methods:
        gain = np.einsum("bs,bt,kst->b", seeds, tasks, values) / len(values) - random_mean
        # the between-selection term of a mean of K selections: variance σ²/K
        delta = deviations[rows, rng.integers(0, r, (bootstrap, len(values)))].mean(1)
        total += sign * (gain - delta)
    return total


def _summarise(gain: float, draws: np.ndarray, level: float, null_percentile, sizes) -> Comparison:
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    other_side = (draws <= 0).mean() if gain > 0 else (draws >= 0).mean()
    p_value = float(min(1.0, max(2 * other_side, 1 / len(draws))))
    return Comparison(float(gain), (float(low), float(high)), p_value, null_percentile, level, sizes)


def gain_over_random(method: np.ndarray, randoms: np.ndarray, *, bootstrap: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Comparison:
    """A method's gain over the mean of R random selections, judged as one draw (or K averaged).

    method: (S, T) or (K, S, T) utilities per seed pair and task, seed pairs shared with randoms:
    (R, S, T), R ≥ 3."""
    method, randoms = _as_draws(method), np.asarray(randoms, float)
    if randoms.ndim != 3 or randoms.shape[0] < 3:
        raise ValueError(f"randoms must be (R ≥ 3, S, T), got shape {randoms.shape}")
    if method.shape[1:] != randoms.shape[1:]:
        raise ValueError(f"method {method.shape[1:]} and randoms {randoms.shape[1:]} differ in (seeds, tasks)")
    gain = method.mean() - randoms.mean()
    percentile = float((_leave_one_out_gains(randoms) < gain).mean())
    draws = _bootstrap([(1.0, method)], randoms, bootstrap, seed)
    return _summarise(gain, draws, level, percentile, (len(method), len(randoms)))


def difference(a: np.ndarray, b: np.ndarray, randoms: np.ndarray, *, bootstrap: int = 2000, seed: int = 0,
               level: float = 0.95) -> Comparison:
    """Method a minus method b (each (S, T) or (K, S, T), seed pairs shared), with both methods'
    between-selection terms drawn from the random selections (R, S, T)."""
    a, b, randoms = _as_draws(a), _as_draws(b), np.asarray(randoms, float)
    if not (a.shape[1:] == b.shape[1:] == randoms.shape[1:]):
        raise ValueError(f"a {a.shape[1:]}, b {b.shape[1:]} and randoms {randoms.shape[1:]} differ in (seeds, tasks)")
    if randoms.shape[0] < 3:
        raise ValueError(f"randoms must hold ≥ 3 selections, got {randoms.shape[0]}")
    gain = a.mean() - b.mean()
    draws = _bootstrap([(1.0, a), (-1.0, b)], randoms, bootstrap, seed)
    return _summarise(gain, draws, level, None, (len(a), len(b)))


def paired_difference(a: np.ndarray, b: np.ndarray, *, bootstrap: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Comparison:
    """Mean of a − b for (J, T) utilities paired by row j (mixture sample j of both mixtures shares its
    seed pair and data order), with a hierarchical bootstrap over the pairs and the tasks. A mixture is
    a distribution that its J samples already draw from, so no between-selection term is added."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"paired utilities must be two (J ≥ 2, T) arrays of one shape, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, diff.shape[0], (bootstrap, diff.shape[0]))
    tasks = rng.integers(0, diff.shape[1], (bootstrap, diff.shape[1]))
    per_pair = np.stack([diff[pairs[i]][:, tasks[i]].mean() for i in range(bootstrap)])
    return _summarise(float(diff.mean()), per_pair, level, None, (a.shape[0], b.shape[0]))

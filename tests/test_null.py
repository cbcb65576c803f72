"""The right null for gains over random: calibrated where the method is a random draw (neither
too liberal nor needlessly wide), and still able to see a real gain. Synthetic utilities with the
structure of the curation test: seed pairs shared by every selection (common random numbers), a
between-selection effect with a part shared across tasks, a composition trade-off (a selection
with more of one domain gains on its task and loses on the others: zero-sum over tasks, the
demo's dominant selection noise), task-level noise."""

from __future__ import annotations

import numpy as np
import pytest

from grasp_pipeline.evaluation.held_out import selection_gains
from grasp_pipeline.evaluation.null import difference, gain_over_random, paired_difference

R, S, T = 20, 4, 9  # random references, seed pairs, tasks (the demo's test shape, with R ≥ 20)
RUNS = 200


def selections(rng, count: int, effect: float = 0.0) -> np.ndarray:
    """(count, S, T) utilities of `count` fresh selections whose true mean gain is `effect`."""
    shared = rng.normal(0, 0.010, (count, 1, 1))  # a selection is better or worse on every task
    tradeoff = rng.normal(0, 0.03, (count, 1, T))
    tradeoff -= tradeoff.mean(-1, keepdims=True)  # more of one domain is less of the others
    per_task = rng.normal(0, 0.008, (count, 1, T))
    noise = rng.normal(0, 0.004, (count, S, T))
    return effect + shared + tradeoff + per_task + noise


def world(rng):
    """(task means + seed effects) shared by every selection of one simulated run."""
    return rng.normal(-3.0, 0.3, (1, 1, T)) + rng.normal(0, 0.02, (1, S, T))


def exclusion_rate(make_method, compare) -> float:
    excluded = 0
    for run in range(RUNS):
        rng = np.random.default_rng(run)
        base = world(rng)
        randoms = base + selections(rng, R)
        method = base + make_method(rng)
        excluded += compare(method, randoms, run)
    return excluded / RUNS


def test_a_random_draw_is_not_better_than_random_in_more_than_7_percent_of_runs():
    rate = exclusion_rate(lambda rng: selections(rng, 1)[0],
                          lambda m, r, run: gain_over_random(m, r).excludes_zero)
    assert 0.01 <= rate <= 0.07, rate  # and not needlessly wide: a 95% interval should miss about 5%


def test_the_seed_only_paired_bootstrap_is_not_calibrated_for_one_draw():
    # why this module exists: holding the selection fixed, a random draw "wins" far too often
    def old(method, randoms, run):
        low, high = selection_gains(method.reshape(S, T), randoms, bootstrap=400, seed=run)["mean_ci"]
        return low > 0 or high < 0

    assert exclusion_rate(lambda rng: selections(rng, 1)[0], old) > 0.2


def test_a_real_gain_of_three_between_selection_sds_is_seen_in_most_runs():
    rate = exclusion_rate(lambda rng: selections(rng, 1, effect=0.04)[0],
                          lambda m, r, run: gain_over_random(m, r).ci[0] > 0)
    assert rate >= 0.8, rate


def test_a_mean_of_ten_random_draws_is_calibrated_and_narrower_than_one_draw():
    rate = exclusion_rate(lambda rng: selections(rng, 10),
                          lambda m, r, run: gain_over_random(m, r).excludes_zero)
    assert rate <= 0.07, rate
    rng = np.random.default_rng(7)
    base = world(rng)
    randoms, ten = base + selections(rng, R), base + selections(rng, 10)
    one_width = np.subtract(*gain_over_random(ten[0], randoms).ci[::-1])
    ten_width = np.subtract(*gain_over_random(ten, randoms).ci[::-1])
    assert ten_width < 0.7 * one_width


def test_the_difference_of_two_random_draws_is_calibrated_and_a_real_gap_is_seen():
    def two(effect):
        return lambda rng: np.stack([selections(rng, 1, effect)[0], selections(rng, 1)[0]])

    def compare(pair, randoms, run):
        return difference(pair[0], pair[1], randoms).excludes_zero

    assert 0.01 <= exclusion_rate(two(0.0), compare) <= 0.07
    assert exclusion_rate(two(0.05), compare) >= 0.7


def test_the_figures_are_the_observed_gain_and_a_percentile_among_random_draws():
    rng = np.random.default_rng(3)
    base = world(rng)
    randoms = base + selections(rng, R)
    method = base + selections(rng, 1, effect=0.1)[0]
    got = gain_over_random(method, randoms)
    assert got.gain == pytest.approx(method.mean() - randoms.mean())
    assert got.null_percentile == 1.0 and got.p_value < 0.05 and got.draws == (1, R)
    assert difference(method, randoms[0], randoms).null_percentile is None


def test_shapes_that_do_not_line_up_are_refused_with_the_shapes_named():
    randoms = np.zeros((R, S, T))
    with pytest.raises(ValueError, match=r"method \(3, 9\) and randoms \(4, 9\)"):
        gain_over_random(np.zeros((3, T)), randoms)
    with pytest.raises(ValueError, match="R ≥ 3"):
        gain_over_random(np.zeros((S, T)), randoms[:2])


def test_two_mixtures_of_one_distribution_differ_in_about_5_percent_of_runs():
    # J = 10 samples per mixture, sample j of both sharing its seeds (`world`); a sample is a draw
    def compare(run: int, effect: float) -> bool:
        rng = np.random.default_rng(run)
        base = world(rng)[:, :1].repeat(10, 1)[0]  # (J, T): seed pair j mod S shared by both mixtures
        a, b = base + effect + selections(rng, 10)[:, 0], base + selections(rng, 10)[:, 0]
        return paired_difference(a, b).excludes_zero

    rate = np.mean([compare(run, 0.0) for run in range(RUNS)])
    assert 0.01 <= rate <= 0.07, rate
    assert np.mean([compare(run, 0.03) for run in range(RUNS)]) >= 0.7


CODE_WEIGHTED = np.array([1, 1, 1, 1, 1, 1, 1, 4, 4]) / 15.0  # a target: two tasks (say, code) weigh 4×


def test_a_target_weighted_verdict_reports_the_weighted_gain_and_stays_calibrated():
    """loop.task_weights reaches the verdict as T·w_t·u_t (evaluation/verdict.py): the gain is the
    target-weighted mean of the per-task gains, a zero-weight task cannot move it, equal weights are
    the unweighted verdict, and a random draw is still ahead of random in at most 7% of runs."""
    from grasp_pipeline.evaluation.verdict import verdict_frame

    def frame(method, randoms, weights):
        return verdict_frame("dev", {"grasp": method}, randoms, {}, budgets={}, level=0.95, weights=weights)

    rng = np.random.default_rng(4)
    base = world(rng)
    randoms, method = base + selections(rng, R), base + selections(rng, 1, effect=0.02)
    row = frame(method, randoms, CODE_WEIGHTED).row(0, named=True)
    per_task = method.mean((0, 1)) - randoms.mean((0, 1))
    assert row["gain"] == pytest.approx(float(CODE_WEIGHTED @ per_task))
    equal, plain = frame(method, randoms, np.full(T, 1 / T)), frame(method, randoms, None)
    for column in ("gain", "ci_low", "ci_high", "p_value", "null_percentile"):
        assert equal[column][0] == pytest.approx(plain[column][0], rel=1e-12)
    muted = np.r_[np.zeros(1), np.full(T - 1, 1 / (T - 1))]
    moved = method.copy()
    moved[..., 0] += 5.0  # a huge change on the task the target ignores
    assert frame(moved, randoms, muted)["gain"][0] == pytest.approx(frame(method, randoms, muted)["gain"][0])
    # ... nor its interval: a target's verdict is the verdict of its weighted tasks alone
    for column in ("gain", "ci_low", "ci_high", "p_value"):
        assert frame(moved, randoms, muted)[column][0] == pytest.approx(
            frame(method[..., 1:], randoms[..., 1:], None)[column][0], rel=1e-9)
    single = np.eye(T)[3]  # a target of one task (a held-out domain's): no task-resampling term
    alone = frame(method[..., 3:4], randoms[..., 3:4], None)
    for column in ("gain", "ci_low", "ci_high"):
        assert frame(method, randoms, single)[column][0] == pytest.approx(alone[column][0], rel=1e-9)

    def compare(method, randoms, run):
        return bool(frame(method, randoms, CODE_WEIGHTED)["excludes_zero"][0])

    assert exclusion_rate(lambda rng: selections(rng, 1)[0], compare) <= 0.07
    assert exclusion_rate(lambda rng: selections(rng, 1, effect=0.04)[0], compare) >= 0.7

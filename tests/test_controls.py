"""The equal-budget controls' building blocks (training/controls.py) and the verdict table
(evaluation/verdict.py) on synthetic utilities whose answer is known by construction."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl

from grasp_pipeline.evaluation.verdict import loop_budgets, verdict_frame
from grasp_pipeline.training.controls import counts_of, quality_filter, random_at_counts, random_mixtures


def test_random_at_counts_draws_each_groups_count_once_per_content_from_the_kept_rows():
    rng = np.random.default_rng(0)
    groups = rng.choice(np.array(["a", "b", "c"]), size=300)
    content = rng.integers(0, 200, size=300)  # many exact duplicates
    keep = rng.random(300) > 0.2
    counts = {"a": 20, "b": 5, "c": 11}
    rows = random_at_counts(groups, counts, seed=3, content=content, keep=keep)
    assert Counter(groups[rows].tolist()) == counts
    assert keep[rows].all() and len(np.unique(content[rows])) == len(rows)
    assert np.array_equal(rows, random_at_counts(groups, counts, seed=3, content=content, keep=keep))
    assert not np.array_equal(rows, random_at_counts(groups, counts, seed=4, content=content, keep=keep))


def test_random_at_counts_keeps_the_budget_when_a_group_runs_short():
    groups = np.array(["a"] * 3 + ["b"] * 50)
    rows = random_at_counts(groups, {"a": 10, "b": 10}, seed=0)
    assert len(rows) == 20 and (groups[rows] == "a").sum() == 3  # all of a, the shortfall from b
    assert counts_of(groups, rows) == {"a": 3, "b": 17}


def test_quality_filter_drops_the_highest_loss_share_of_each_domain():
    domains = np.array(["x"] * 10 + ["y"] * 20)
    losses = np.concatenate([np.arange(10.0), 100 + np.arange(20.0)])  # y is harder throughout
    keep = quality_filter(losses, domains, 0.2)
    assert (~keep).sum() == 2 + 4
    assert set(np.flatnonzero(~keep)) == {8, 9, 26, 27, 28, 29}  # the worst of each domain, not all of y
    assert quality_filter(losses, domains, 0.0).all()


def test_random_mixtures_start_at_natural_and_stay_within_the_caps():
    natural = np.array([0.5, 0.3, 0.2])
    caps = np.array([0.6, 0.6, 0.3])
    mixes = random_mixtures(natural, caps, 6, concentration=2.0, seed=1)
    assert len(mixes) == 6 and np.allclose(mixes[0], natural)
    for pi in mixes:
        assert np.isclose(pi.sum(), 1) and (pi <= caps + 1e-9).all() and (pi >= -1e-12).all()
    assert len({tuple(np.round(pi, 6)) for pi in mixes}) == 6


def _synthetic(seed: int, effect: float):
    """20 random selections, a control (mean of 10 random draws) and a method `effect` nats ahead of
    random on every task; seeds add their own noise."""
    rng = np.random.default_rng(seed)
    s, t = 4, 9
    def draw(k, shift=0.0):  # selection effect + seed noise, (k, S, T)
        return shift + rng.normal(0, 0.01, (k, 1, t)) + rng.normal(0, 0.003, (k, s, t))
    return draw(20), {"grasp": draw(1, effect), "random_at_counts": draw(10), "random_pick": draw(1)}


def test_the_verdict_finds_a_real_effect_and_its_difference_to_the_controls():
    randoms, selections = _synthetic(0, effect=0.05)
    frame = verdict_frame("dev", selections, randoms, {}, budgets={"grasp": (12, 48), "random_pick": (12, 48)},
                          level=0.95)
    gain = frame.filter((pl.col("kind") == "gain") & (pl.col("method") == "grasp")).row(0, named=True)
    assert gain["ci_low"] > 0 and gain["candidates"] == 12 and gain["dev_retrainings"] == 48
    diffs = frame.filter(pl.col("kind") == "difference")
    assert set(diffs["reference"]) == {"random_pick", "random_at_counts"}  # the pairs whose sides were measured
    assert (diffs["ci_low"] > 0).all()
    draws = frame.filter(pl.col("method") == "random_at_counts")["draws"][0]
    assert draws == 10


def test_the_verdict_calls_a_random_draw_level_with_random():
    level = 0
    for seed in range(20):
        randoms, selections = _synthetic(100 + seed, effect=0.0)
        frame = verdict_frame("dev", selections, randoms, {}, budgets={}, level=0.95)
        row = frame.filter((pl.col("kind") == "difference") & (pl.col("reference") == "random_pick")).row(0, named=True)
        level += row["ci_low"] <= 0 <= row["ci_high"]
    assert level >= 17  # about 95% of 20 (the null-coverage simulation itself: tests/test_null.py)


def test_loop_budgets_count_each_proposers_candidates_and_retrainings():
    rounds = pl.DataFrame({"proposer": ["grasp"] * 3 + ["random_pick"] * 3 + ["filter_dedup"] * 2,
                           "kind": ["selection", "selection", "mixture"] * 2 + ["selection"] * 2,
                           "round": [0, 1, 0, 0, 1, 0, 1, 1], "retrainings": [2, 2, 4, 2, 2, 4, 2, 2]})
    budgets = loop_budgets(rounds)
    assert budgets["grasp"] == budgets["random_pick"] == (2, 8) and budgets["mixture-grasp"] == (1, 8)
    assert budgets["filter_dedup"] == (2, 4) and budgets["grasp_round0"] == (1, None)
    assert budgets["grasp_proposal"] == (2, 8)

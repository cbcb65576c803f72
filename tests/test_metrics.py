"""Noise ceilings: how well any surrogate could possibly do against noisy retraining."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from grasp_pipeline.evaluation.fidelity import noise_ceilings
from grasp_pipeline.stats import noise_ceiling, spearman


def test_noise_ceiling_of_one_retraining_is_the_root_of_the_repeat_correlation():
    assert noise_ceiling(0.25, repeats=1) == pytest.approx(0.5)


def test_averaging_repeats_raises_the_ceiling_by_spearman_brown():
    # ρ = 0.5 between single repeats: the mean of two has reliability 2·0.5 / 1.5 = 2/3
    assert noise_ceiling(0.5, repeats=2) == pytest.approx(math.sqrt(2 / 3))


def test_unreliable_retraining_has_a_zero_ceiling():
    assert noise_ceiling(-0.1, repeats=2) == 0.0
    assert noise_ceiling(float("nan"), repeats=2) == 0.0


def test_noise_ceilings_correlate_repeats_within_each_sampler():
    rng = np.random.default_rng(0)
    signal = rng.normal(size=40)
    noisy = {r: signal + rng.normal(scale=0.5, size=40) for r in (0, 1)}
    outcomes = pl.DataFrame({"subset_id": np.tile(np.arange(40), 2), "task": "t",
                             "repeat": np.repeat([0, 1], 40), "utility": np.concatenate([noisy[0], noisy[1]])})
    plan = pl.DataFrame({"subset_id": np.arange(40), "sampler": ["uniform"] * 20 + ["dirichlet"] * 20})
    ceilings = noise_ceilings(outcomes, plan)
    for sampler, rows in (("uniform", slice(0, 20)), ("dirichlet", slice(20, 40))):
        rho = spearman(noisy[0][rows], noisy[1][rows])
        assert ceilings[f"repeat_reliability.{sampler}"] == pytest.approx(rho)
        assert ceilings[f"noise_ceiling.{sampler}"] == pytest.approx(math.sqrt(2 * rho / (1 + rho)))


def test_a_single_repeat_reports_no_ceiling():
    outcomes = pl.DataFrame({"subset_id": [0, 1, 2], "task": "t", "repeat": [0, 0, 0], "utility": [1.0, 2.0, 3.0]})
    assert noise_ceilings(outcomes, pl.DataFrame({"subset_id": [0, 1, 2], "sampler": ["uniform"] * 3})) == {}

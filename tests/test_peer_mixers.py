"""The peer mixers (RegMix, log-linear mixing law) recover planted optima from subset-level data."""

from __future__ import annotations

import numpy as np
import pytest

from grasp_pipeline.mixture.regression import (
    MixtureData,
    fit_loglinear,
    fit_regmix,
    loglinear_utility,
    propose_loglinear,
    propose_regmix,
    subset_shares,
)


def planted_loglinear(seed: int = 0, m: int = 120, d: int = 4):
    """Utilities from a known mixing law: loss_t = c + exp(b0 + b log|S| + θ_t·π), two tasks."""
    rng = np.random.default_rng(seed)
    shares = rng.dirichlet(np.full(d, 0.7), size=m)
    sizes = rng.integers(50, 400, m)
    thetas = np.array([[-1.0, 0.5, 0.3, 0.2], [0.4, -0.8, 0.2, 0.2]])
    loss = np.column_stack([1.5 + np.exp(0.2 - 0.1 * np.log(sizes) + shares @ th) for th in thetas])
    return MixtureData(shares, sizes, -loss + rng.normal(0, 1e-4, loss.shape)), thetas


def test_the_loglinear_fit_recovers_the_planted_law():
    data, thetas = planted_loglinear()
    params = fit_loglinear(data)
    for p, theta in zip(params, thetas):
        assert np.allclose(p["theta"], theta - theta.mean(), atol=0.05)
        assert p["b"] == pytest.approx(-0.1, abs=0.02)


def test_the_loglinear_proposer_finds_the_planted_optimum_and_the_kl_pull_moves_it_to_natural():
    data, thetas = planted_loglinear()
    params = fit_loglinear(data)
    natural, caps, weights = np.full(4, 0.25), np.ones(4), np.array([0.5, 0.5])
    pi, predicted = propose_loglinear(params, natural, caps, 200, weights, kl_weight=0.0)
    grid = np.random.default_rng(1).dirichlet(np.ones(4), 20000)
    def true(p):
        return -np.mean([1.5 + np.exp(0.2 - 0.1 * np.log(200) + p @ th) for th in thetas], axis=0)
    assert true(pi[None])[0] >= true(grid).max() - 1e-3
    assert predicted == pytest.approx(loglinear_utility(params, pi, 200, weights)[0])
    pulled, _ = propose_loglinear(params, natural, caps, 200, weights, kl_weight=10.0)
    assert np.abs(pulled - natural).sum() < np.abs(pi - natural).sum()


def test_regmix_finds_a_planted_interior_optimum():
    rng = np.random.default_rng(0)
    best = np.array([0.4, 0.3, 0.2, 0.1])
    shares = rng.dirichlet(np.full(4, 1.0), 400)
    utility = -((shares - best) ** 2).sum(1, keepdims=True) + rng.normal(0, 1e-4, (400, 1))
    models = fit_regmix(MixtureData(shares, np.full(400, 100), utility))
    pi, _ = propose_regmix(models, np.full(4, 0.25), np.ones(4), 100, np.ones(1), candidates=5000, top_k=50)
    assert np.abs(pi - best).sum() < 0.15
    assert np.abs(np.full(4, 0.25) - best).sum() > 0.35  # the answer is not just the start


def test_proposals_respect_the_caps():
    data, _ = planted_loglinear()
    caps = np.array([0.2, 1.0, 1.0, 1.0])
    pi, _ = propose_loglinear(fit_loglinear(data), np.full(4, 0.25), caps, 200, np.array([1.0, 0.0]), 0.0)
    assert pi[0] <= 0.2 + 1e-9 and pi.sum() == pytest.approx(1.0)


def test_subset_shares_are_fractions_of_members_per_domain():
    codes = np.array([0, 0, 1, 2, 2, 2])
    shares = subset_shares([np.array([0, 2]), np.array([3, 4, 5, 1])], codes, 3)
    assert np.allclose(shares, [[0.5, 0.5, 0.0], [0.25, 0.0, 0.75]])

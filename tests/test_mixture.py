"""Tests for grasp_pipeline.mixture: the expected surrogate, its gradient, the optimiser, sampling.

The expected GRASP objective is checked against Monte-Carlo estimates that draw subsets
without replacement (as fit subsets and mixture samples are drawn) and evaluate Û_t(S) from
the DESIGN §2 formula; the optimiser against a brute-force grid.
"""

from __future__ import annotations

import numpy as np
import pytest

from grasp_pipeline.mixture import (
    MixtureObjective,
    domain_stats,
    natural_mixture,
    optimise_mixture,
    sample_mixture,
    uniform_mixture,
)
from grasp_pipeline.mixture.objective import project_capped_simplex
from grasp_pipeline.selection import predicted_utilities

SIZE = {"none": lambda b: 0.0, "linear": lambda b: float(b), "log": lambda b: float(np.log(b))}
NORM = {"none": lambda b: 1.0, "sqrt": lambda b: 1 / np.sqrt(b), "mean": lambda b: 1 / b}


def tiny_problem(seed: int = 0, k: int = 3, normalisation: str = "sqrt", size_term: str = "log",
                 geometry: str = "diagonal"):
    rng = np.random.default_rng(seed)
    sizes = [6, 8, 5]
    means = rng.normal(size=(3, k)) * 1.5
    z = np.concatenate([means[d] + rng.normal(size=(n, k)) for d, n in enumerate(sizes)])
    domains = np.repeat(np.array(["a", "b", "c"]), sizes)
    q = rng.normal(size=(2, k))
    params = [{"intercept": float(rng.normal()), "size_coef": float(rng.uniform(0, 1)),
               "b": float(rng.uniform(0.5, 2.0)),
               "penalty": rng.uniform(0.05, 0.3, size=1 if geometry == "identity" else k).tolist(),
               "normalisation": normalisation, "size_term": size_term} for _ in range(2)]
    return z, domains, q, params, np.array([0.3, 0.7])


def surrogate_value(sums: np.ndarray, budget: int, q, params, weights) -> np.ndarray:
    """Σ_t w_t Û_t(S) for rows of subset sums s (DESIGN §2 formula, fixed |S| = budget)."""
    k = sums.shape[1]
    total = np.zeros(len(sums))
    for w, p, q_t in zip(weights, params, q):
        z_s = NORM[p["normalisation"]](budget) * sums
        h = np.broadcast_to(np.asarray(p["penalty"]), (k,))
        total += w * (p["intercept"] + p["size_coef"] * SIZE[p["size_term"]](budget) + p["b"] * z_s @ q_t
                      - (z_s ** 2) @ h)
    return total


@pytest.mark.parametrize("normalisation,geometry", [("sqrt", "diagonal"), ("mean", "identity"),
                                                    ("none", "diagonal")])
def test_objective_is_the_expected_surrogate_of_per_domain_draws(normalisation, geometry):
    """Monte Carlo: 200k subsets of π·B draws per domain (without replacement); 5 standard errors."""
    z, domains, q, params, weights = tiny_problem(1, normalisation=normalisation, geometry=geometry)
    budget, pi = 10, np.array([0.3, 0.5, 0.2])
    objective = MixtureObjective(domain_stats(z, domains), q, params, weights, budget)

    rng = np.random.default_rng(2)
    draws = 200_000
    sums = np.zeros((draws, z.shape[1]))
    for name, count in zip(["a", "b", "c"], np.rint(pi * budget).astype(int)):
        rows = np.flatnonzero(domains == name)
        sums += z[rows[rng.random((draws, len(rows))).argsort(1)[:, :count]]].sum(1)
    values = surrogate_value(sums, budget, q, params, weights)
    standard_error = values.std() / np.sqrt(draws)
    assert abs(objective(pi) - values.mean()) < 5 * standard_error


def finite_pool_problem():
    """Three small domains (12, 20, 16 examples) with a strong penalty: a budget of 24 takes half
    of a domain, so drawing without replacement visibly shrinks the spread of the sums."""
    rng = np.random.default_rng(5)
    sizes, k = [12, 20, 16], 3
    means = rng.normal(size=(3, k)) * 0.5
    z = np.concatenate([means[d] + 2 * rng.normal(size=(n, k)) for d, n in enumerate(sizes)])
    domains = np.repeat(np.array(["a", "b", "c"]), sizes)
    params = [{"intercept": 0.1, "size_coef": 0.2, "b": 1.0, "penalty": [0.5] * k, "normalisation": "sqrt",
               "size_term": "log"} for _ in range(2)]
    return z, domains, rng.normal(size=(2, k)), params, np.array([0.4, 0.6])


def expected_surrogate(z, domains, pi, budget, q, params, weights, replace: bool) -> float:
    """E[Σ_t w_t Û_t(S)] from the per-domain mean and variance of the sum of π·B draws."""
    mean_sum, variance = np.zeros(z.shape[1]), np.zeros(z.shape[1])
    for name, count in zip(["a", "b", "c"], np.rint(pi * budget)):
        rows = z[domains == name]
        factor = 1.0 if replace else (len(rows) - count) / (len(rows) - 1)
        mean_sum += count * rows.mean(0)
        variance += count * rows.var(0) * factor
    penalty = sum(w * NORM[p["normalisation"]](budget) ** 2 * np.broadcast_to(p["penalty"], variance.shape) @ variance
                  for w, p in zip(weights, params))
    return float(surrogate_value(mean_sum[None], budget, q, params, weights)[0] - penalty)


def test_objective_is_the_mean_utility_of_sample_mixture_draws_without_replacement():
    """20k samples from `sample_mixture` itself, scored by `predicted_utilities`: the objective
    is within 4 standard errors of their mean; the with-replacement expectation is > 20 away."""
    z, domains, q, params, weights = finite_pool_problem()
    budget, pi = 24, np.array([0.25, 0.5, 0.25])
    objective = MixtureObjective(domain_stats(z, domains), q, params, weights, budget)

    draws = 20_000
    sums = np.stack([z[sample_mixture(domains, pi, ["a", "b", "c"], budget, seed)].sum(0) for seed in range(draws)])
    values = predicted_utilities(params, q, sums, np.full(draws, budget)) @ weights
    standard_error = values.std() / np.sqrt(draws)
    assert abs(objective(pi) - values.mean()) < 4 * standard_error
    assert objective(pi) == pytest.approx(expected_surrogate(z, domains, pi, budget, q, params, weights, False))
    with_replacement = expected_surrogate(z, domains, pi, budget, q, params, weights, True)
    assert abs(with_replacement - values.mean()) > 20 * standard_error


def test_domain_stats_are_per_domain_means_and_population_variances():
    z, domains, *_ = tiny_problem(3)
    stats = domain_stats(z, domains)
    assert stats.domains == ["a", "b", "c"]
    np.testing.assert_array_equal(stats.counts, [6, 8, 5])
    for i, name in enumerate("abc"):
        rows = z[domains == name]
        np.testing.assert_allclose(stats.means[i], rows.sum(0) / len(rows))
        np.testing.assert_allclose(stats.variances[i], ((rows - rows.mean(0)) ** 2).sum(0) / len(rows))


@pytest.mark.parametrize("seed", range(3))
def test_gradient_matches_central_finite_differences(seed):
    z, domains, q, params, weights = tiny_problem(seed)
    objective = MixtureObjective(domain_stats(z, domains), q, params, weights, budget=12)
    pi = np.random.default_rng(seed).dirichlet(np.ones(3))
    h = 1e-5
    numeric = np.array([(objective(pi + h * e) - objective(pi - h * e)) / (2 * h) for e in np.eye(3)])
    np.testing.assert_allclose(objective.gradient(pi), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_hessian_matches_finite_differences_of_the_gradient(seed):
    z, domains, q, params, weights = tiny_problem(seed)
    objective = MixtureObjective(domain_stats(z, domains), q, params, weights, budget=12)
    pi, h = np.random.default_rng(seed).dirichlet(np.ones(3)), 1e-5
    numeric = np.column_stack([(objective.gradient(pi + h * e) - objective.gradient(pi - h * e)) / (2 * h)
                               for e in np.eye(3)])
    np.testing.assert_allclose(objective.hessian(), numeric, rtol=1e-6, atol=1e-6)


def shared_mean_problem(seed: int):
    """Domains a and b share a mean and c lies elsewhere: along the a–b edge only the convex
    finite-population term curves f, so f is not concave on the simplex."""
    rng = np.random.default_rng(seed)
    sizes = [10, 14, 12]
    means = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) * rng.uniform(0.2, 1)
    z = np.concatenate([means[d] + rng.normal(size=(n, 2)) * rng.uniform(1, 3) for d, n in enumerate(sizes)])
    domains = np.repeat(np.array(["a", "b", "c"]), sizes)
    params = [{"intercept": 0.0, "size_coef": 0.0, "b": 1.0, "penalty": [0.5], "normalisation": "mean",
               "size_term": "none"}]
    return MixtureObjective(domain_stats(z, domains), rng.normal(size=(1, 2)), params, np.array([1.0]), budget=10)


def test_max_curvature_is_the_largest_hessian_eigenvalue_along_the_simplex():
    for objective in [shared_mean_problem(7), optimiser_problem(0), optimiser_problem(4)]:
        hessian = objective.hessian()
        # the largest second derivative over unit directions δ with Σδ = 0, on a fine circle of them
        basis = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]) / np.sqrt([[2.0], [6.0]])
        angles = np.linspace(0, np.pi, 20_001)
        directions = np.cos(angles)[:, None] * basis[0] + np.sin(angles)[:, None] * basis[1]
        largest = np.einsum("ni,ij,nj->n", directions, hessian, directions).max()
        assert objective.max_curvature == pytest.approx(largest, rel=1e-6, abs=1e-9)
        assert objective.concave == (largest <= 0)
    assert not shared_mean_problem(7).concave and optimiser_problem(4).concave


def simplex_grid(step: int = 200) -> np.ndarray:
    points = [(i, j, step - i - j) for i in range(step + 1) for j in range(step + 1 - i)]
    return np.array(points, float) / step


def brute_force_best(objective, caps: np.ndarray) -> float:
    grid = simplex_grid()
    grid = grid[(grid <= caps + 1e-12).all(1)]
    return max(objective(p) for p in grid)


def optimiser_problem(seed: int):
    """A problem whose unconstrained optimum is interior: strong penalty, spread domain means."""
    z, domains, q, params, weights = tiny_problem(seed, normalisation="mean", geometry="identity")
    for p in params:
        p["penalty"] = [2.0]
    return MixtureObjective(domain_stats(z, domains), q, params, weights, budget=20)


@pytest.mark.parametrize("seed", range(3))
def test_optimiser_beats_a_fine_grid_on_the_uncapped_simplex(seed):
    objective = optimiser_problem(seed)
    caps = np.ones(3)
    pi = optimise_mixture(objective, caps)
    assert pi.sum() == pytest.approx(1.0)
    assert (pi >= 0).all()
    assert objective(pi) >= brute_force_best(objective, caps) - 1e-4


@pytest.mark.parametrize("caps", [[0.2, 1.0, 1.0], [0.1, 0.1, 1.0], [0.5, 0.3, 0.4]])
def test_optimiser_respects_caps_and_beats_the_capped_grid(caps):
    objective = optimiser_problem(4)
    caps = np.array(caps)
    pi = optimise_mixture(objective, caps)
    assert pi.sum() == pytest.approx(1.0)
    assert (pi >= 0).all()
    assert (pi <= caps + 1e-6).all(), (pi, caps)
    assert objective(pi) >= brute_force_best(objective, caps) - 1e-4


@pytest.mark.parametrize("seed", [7, 13])
def test_optimiser_finds_the_best_vertex_of_a_non_concave_objective(seed):
    """From the caps-proportional start alone SLSQP stops at the worse end of the convex a–b edge."""
    objective = shared_mean_problem(seed)
    assert not objective.concave
    caps = np.ones(3)
    assert objective(optimise_mixture(objective, caps)) >= brute_force_best(objective, caps) - 1e-6


def test_capped_weights_sum_to_one_when_caps_bind():
    """On this objective (~2e4 utility units) SLSQP used to stop 0.4% short of Σπ = 1; the exact
    projection onto the capped simplex still gives weights that fill the budget."""
    z, domains, q, params, weights = tiny_problem(21, normalisation="none")
    objective = MixtureObjective(domain_stats(z, domains), q, params, weights, budget=200)
    caps = np.array([0.4, 0.3, 0.35])
    pi = optimise_mixture(objective, caps)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12)
    assert (pi >= 0).all() and (pi <= caps).all()
    assert np.isclose(pi, caps).any()  # a cap binds
    assert objective(pi) >= brute_force_best(objective, caps) - 1e-4


@pytest.mark.parametrize("seed", range(5))
def test_projection_onto_the_capped_simplex_is_the_nearest_feasible_point(seed):
    rng = np.random.default_rng(seed)
    x, caps = rng.normal(size=3) * 0.6, rng.uniform(0.2, 0.7, size=3)
    pi = project_capped_simplex(x, caps)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12) and (pi >= 0).all() and (pi <= caps).all()
    grid = simplex_grid(400)
    grid = grid[(grid <= caps).all(1)]
    assert np.linalg.norm(pi - x) <= np.linalg.norm(grid - x, axis=1).min() + 1e-12


def test_optimiser_refuses_caps_that_cannot_fill_the_budget():
    objective = optimiser_problem(0)
    with pytest.raises(ValueError, match="caps sum"):
        optimise_mixture(objective, np.array([0.3, 0.3, 0.3]))


def test_natural_and_uniform_mixtures():
    z, domains, *_ = tiny_problem(0)
    stats = domain_stats(z, domains)
    np.testing.assert_allclose(natural_mixture(stats), [6 / 19, 8 / 19, 5 / 19])
    np.testing.assert_allclose(uniform_mixture(stats), [1 / 3] * 3)


def test_the_natural_mixture_is_the_corpus_share_given_renormalised_over_the_pool_domains():
    """corpus.natural: the corpus's own proportions replace the capped pool's counts; a domain the corpus
    stage recorded but the pool lacks drops out and the rest renormalise; a pool domain without a weight
    is an error naming it."""
    z, domains, *_ = tiny_problem(0)
    names = sorted(set(domains.tolist()))
    stats = domain_stats(z, domains, {names[0]: 6.0, names[1]: 3.0, names[2]: 1.0, "elsewhere": 90.0})
    np.testing.assert_allclose(natural_mixture(stats), [0.6, 0.3, 0.1])
    np.testing.assert_array_equal(stats.counts, domain_stats(z, domains).counts)  # the pool's, for sampling
    with pytest.raises(ValueError, match=f"no weight for domain.*{names[2]}"):
        domain_stats(z, domains, {names[0]: 1.0, names[1]: 1.0})


def largest_remainder(pi: np.ndarray, budget: int) -> list[int]:
    raw = [p * budget for p in pi]
    counts = [int(np.floor(r)) for r in raw]
    left = budget - sum(counts)
    by_remainder = sorted(range(len(pi)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


@pytest.mark.parametrize("pi,budget", [([0.37, 0.41, 0.22], 17), ([0.05, 0.15, 0.8], 9),
                                       ([1 / 3, 1 / 3, 1 / 3], 12), ([0.0, 0.62, 0.38], 13)])
def test_sample_mixture_draws_the_budget_with_largest_remainder_counts(pi, budget):
    domains = np.repeat(np.array(["a", "b", "c"]), [20, 30, 25])
    pi = np.array(pi)
    rows = sample_mixture(domains, pi, ["a", "b", "c"], budget, seed=3)
    assert len(rows) == budget
    counts = [int((domains[rows] == name).sum()) for name in "abc"]
    assert counts == largest_remainder(pi, budget)
    assert len(set(rows.tolist())) == budget  # every domain is large enough: no repeats


def test_sample_mixture_is_seeded_and_repeats_rows_only_when_a_domain_is_too_small():
    domains = np.repeat(np.array(["a", "b"]), [3, 40])
    pi = np.array([0.5, 0.5])
    first = sample_mixture(domains, pi, ["a", "b"], 14, seed=7)
    np.testing.assert_array_equal(first, sample_mixture(domains, pi, ["a", "b"], 14, seed=7))
    assert not np.array_equal(first, sample_mixture(domains, pi, ["a", "b"], 14, seed=8))
    a_rows = first[domains[first] == "a"]
    assert len(a_rows) == 7 and set(a_rows.tolist()) <= {0, 1, 2}  # 7 draws from 3 rows
    assert sorted(np.bincount(a_rows, minlength=3).tolist()) == [2, 2, 3]  # two whole copies and one more
    b_rows = first[domains[first] == "b"]
    assert len(b_rows) == 7 == len(set(b_rows.tolist()))


def test_sample_mixture_takes_whole_copies_and_a_remainder_without_replacement():
    domains = np.repeat(np.array(["a", "b"]), [4, 40])
    for seed in range(20):
        rows = sample_mixture(domains, np.array([0.5, 0.5]), ["a", "b"], 22, seed=seed)  # 11 from 4 rows
        a_counts = np.bincount(rows[domains[rows] == "a"], minlength=4)
        assert sorted(a_counts.tolist()) == [2, 3, 3, 3]

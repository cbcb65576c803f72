"""Tests for grasp_pipeline.select: the residual greedy against objectives computed directly.

The objective is f(S) = scale·⟨v, s⟩ − scale²·‖s‖²_D with s = Σ_{i∈S} z_i (module doc); the
tests evaluate it from scratch for every subset they compare, never through the greedy's
incremental bookkeeping.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from grasp_pipeline.select import (
    grasp_objective,
    grasp_selection,
    random_selection,
    residual_greedy,
    task_weight_vector,
    top_k,
)


def objective(z: np.ndarray, rows, v: np.ndarray, d: np.ndarray, scale: float) -> float:
    s = z[list(rows)].sum(0) if len(rows) else np.zeros(z.shape[1])
    return float(scale * v @ s - scale ** 2 * (s ** 2) @ d)


def random_problem(seed: int, n: int = 10, k: int = 4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)), rng.normal(size=k), rng.uniform(0.05, 1.0, size=k)


# -----------------------------------------------------------------------------
# the greedy and its objective


@pytest.mark.parametrize("seed", range(4))
def test_with_no_penalty_the_greedy_is_additive_top_k(seed):
    z, v, _ = random_problem(seed, n=30)
    selection = residual_greedy(z, v, np.zeros(4), scale=0.7, budget=8)
    scores = z @ v
    expected = np.argsort(-scores)[:8]
    np.testing.assert_array_equal(selection.rows, expected)
    np.testing.assert_allclose(selection.gains, 0.7 * scores[expected])


def test_with_no_penalty_the_greedy_finds_the_brute_force_optimum():
    z, v, _ = random_problem(11, n=9)
    selection = residual_greedy(z, v, np.zeros(4), scale=1.0, budget=3)
    best = max(itertools.combinations(range(9), 3), key=lambda s: objective(z, s, v, np.zeros(4), 1.0))
    assert set(selection.rows.tolist()) == set(best)


@pytest.mark.parametrize("seed", range(5))
def test_each_reported_gain_is_the_objective_increase_computed_directly(seed):
    z, v, d = random_problem(seed)
    scale = 0.4
    selection = residual_greedy(z, v, d, scale, budget=5)
    assert len(selection.rows) == 5
    for step in range(5):
        before = objective(z, selection.rows[:step], v, d, scale)
        after = objective(z, selection.rows[:step + 1], v, d, scale)
        assert selection.gains[step] == pytest.approx(after - before, rel=1e-9, abs=1e-12)
    assert selection.gains.sum() == pytest.approx(objective(z, selection.rows, v, d, scale))


@pytest.mark.parametrize("seed", range(5))
def test_each_step_takes_the_example_with_the_largest_direct_marginal_gain(seed):
    z, v, d = random_problem(seed + 10)
    scale = 0.5
    selection = residual_greedy(z, v, d, scale, budget=4)
    for step, row in enumerate(selection.rows):
        taken = list(selection.rows[:step])
        base = objective(z, taken, v, d, scale)
        marginal = {i: objective(z, taken + [i], v, d, scale) - base for i in range(len(z)) if i not in taken}
        assert marginal[row] == pytest.approx(max(marginal.values()))


def test_the_first_pick_is_the_best_single_example_by_brute_force():
    z, v, d = random_problem(21, n=10)
    selection = residual_greedy(z, v, d, scale=1.0, budget=3)
    best_single = max(range(10), key=lambda i: objective(z, [i], v, d, 1.0))
    assert selection.rows[0] == best_single


def test_a_redundant_copy_loses_to_a_complementary_example_under_a_penalty():
    # rows 0 and 1 are identical and individually best; row 2 is orthogonal and weaker alone
    z = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.2, -0.1]])
    v = np.array([1.0, 0.5])
    d = np.full(2, 0.3)
    singles = [objective(z, [i], v, d, 1.0) for i in range(4)]
    assert singles[0] == singles[1] > singles[2]  # the copy is the better example alone

    penalised = residual_greedy(z, v, d, scale=1.0, budget=2)
    assert penalised.rows.tolist() == [0, 2]
    best_pair = max(itertools.combinations(range(4), 2), key=lambda s: objective(z, s, v, d, 1.0))
    assert set(best_pair) == {0, 2}

    additive = residual_greedy(z, v, np.zeros(2), scale=1.0, budget=2)
    assert additive.rows.tolist() == [0, 1]  # without the penalty, the copy wins


# -----------------------------------------------------------------------------
# constraints


def test_domain_quota_is_respected_and_each_pick_is_the_best_still_allowed():
    rng = np.random.default_rng(3)
    z, v, d = rng.normal(size=(24, 3)), rng.normal(size=3), rng.uniform(0.1, 0.5, 3)
    domains = np.array(["a", "b", "c"] * 8)
    # without a quota the greedy would crowd one domain; make that so by construction
    z[domains == "a"] += 2 * v / np.linalg.norm(v)
    free = residual_greedy(z, v, d * 0, 1.0, 6)
    assert (domains[free.rows] == "a").sum() > 2

    selection = residual_greedy(z, v, d * 0, 1.0, 6, domains=domains, max_per_domain=2)
    assert len(selection.rows) == 6
    _, counts = np.unique(domains[selection.rows], return_counts=True)
    assert counts.max() <= 2
    for step, row in enumerate(selection.rows):
        taken = selection.rows[:step]
        full = {dom for dom in "abc" if (domains[taken] == dom).sum() >= 2}
        allowed = [i for i in range(24) if i not in taken and domains[i] not in full]
        assert z[row] @ v == pytest.approx(max(z[i] @ v for i in allowed))


def test_quota_returns_fewer_rows_only_when_the_constraints_run_out():
    z, v, d = random_problem(4, n=12, k=3)
    domains = np.array(["x"] * 6 + ["y"] * 6)
    selection = residual_greedy(z, v, d, 1.0, budget=7, domains=domains, max_per_domain=3)
    assert len(selection.rows) == 6
    assert sorted(np.unique(domains[selection.rows], return_counts=True)[1].tolist()) == [3, 3]


def test_content_dedup_takes_at_most_one_row_per_content_hash():
    z, v, _ = random_problem(5, n=8, k=3)
    z[0] += 5 * v / np.linalg.norm(v)  # the duplicated document is the most attractive one
    z[1] = z[0]  # two copies of the same document
    z[5] = z[4]
    content = np.array(["h0", "h0", "h2", "h3", "h4", "h4", "h6", "h7"])
    additive = residual_greedy(z, v, np.zeros(3), 1.0, budget=2)
    assert set(additive.rows.tolist()) == {0, 1}  # without dedup both copies are taken

    selection = residual_greedy(z, v, np.zeros(3), 1.0, budget=8, content=content)
    assert len(set(content[selection.rows])) == len(selection.rows) == 6  # 6 distinct hashes
    assert 0 in selection.rows and 1 not in selection.rows  # first copy taken, second never


def test_excluded_rows_are_never_selected():
    z, v, d = random_problem(6, n=10)
    best = residual_greedy(z, v, d, 1.0, budget=3).rows
    excluded = np.array(best[:2])
    selection = residual_greedy(z, v, d, 1.0, budget=5, excluded=excluded)
    assert not set(excluded.tolist()) & set(selection.rows.tolist())
    assert len(selection.rows) == 5
    assert residual_greedy(z, v, d, 1.0, budget=20, excluded=excluded).rows.size == 8


def test_top_k_breaks_ties_by_row_order_and_skips_excluded_rows():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.5])
    assert top_k(scores, 3).rows.tolist() == [1, 2, 4]
    selection = top_k(scores, 3, excluded=np.array([2]))
    assert selection.rows.tolist() == [1, 4, 3]
    np.testing.assert_array_equal(selection.gains, [3.0, 3.0, 2.0])
    assert top_k(scores, 10, excluded=np.array([0, 1])).rows.tolist() == [2, 4, 3, 5]


# -----------------------------------------------------------------------------
# random baseline


def test_random_selection_is_deterministic_in_seed_without_duplicates():
    first = random_selection(100, 20, seed=3)
    again = random_selection(100, 20, seed=3)
    other = random_selection(100, 20, seed=4)
    np.testing.assert_array_equal(first.rows, again.rows)
    assert len(set(first.rows.tolist())) == 20
    assert not np.array_equal(np.sort(first.rows), np.sort(other.rows))


def test_random_selection_respects_exclusions_and_caps_at_the_allowed_rows():
    excluded = np.arange(0, 10, 2)
    selection = random_selection(10, 50, seed=0, excluded=excluded)
    assert sorted(selection.rows.tolist()) == [1, 3, 5, 7, 9]


# -----------------------------------------------------------------------------
# task weights and the GRASP objective


def test_task_weights_default_to_one_and_are_normalised():
    np.testing.assert_allclose(task_weight_vector(["a", "b", "c"], {"b": 3.0}), [0.2, 0.6, 0.2])
    np.testing.assert_allclose(task_weight_vector(["a", "b"], {}), [0.5, 0.5])


def test_task_weights_naming_an_unknown_task_are_refused():
    with pytest.raises(ValueError, match="unknown tasks.*'typo'"):
        task_weight_vector(["a", "b"], {"typo": 1.0})


@pytest.mark.parametrize("weights", [{"a": -1.0}, {"a": 0.0, "b": 0.0}])
def test_negative_or_all_zero_task_weights_are_refused(weights):
    with pytest.raises(ValueError, match="non-negative"):
        task_weight_vector(["a", "b"], weights)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_task_weights_are_refused(bad):
    with pytest.raises(ValueError):
        task_weight_vector(["a", "b"], {"a": bad})


def fitted_params(normalisation: str, rng: np.random.Generator, k: int, geometry: str):
    return [{"intercept": float(rng.normal()), "size_coef": float(rng.normal()), "b": float(rng.uniform(0, 2)),
             "penalty": rng.uniform(0, 1, size=1 if geometry == "identity" else k).tolist(),
             "normalisation": normalisation, "size_term": "log"} for _ in range(3)]


@pytest.mark.parametrize("normalisation,geometry", [("mean", "identity"), ("sqrt", "diagonal"),
                                                    ("none", "identity")])
def test_grasp_selection_gains_sum_to_the_weighted_surrogate_above_its_constant(normalisation, geometry):
    """Σ gains = Σ_t w_t Û_t(S) − Σ_t w_t (a_t + s_t log B), with Û_t from DESIGN §2 directly."""
    rng = np.random.default_rng(8)
    k, budget = 5, 4
    z, q = rng.normal(size=(15, k)), rng.normal(size=(3, k))
    params = fitted_params(normalisation, rng, k, geometry)
    weights = np.array([0.5, 0.2, 0.3])
    norm = {"none": 1.0, "sqrt": 1 / np.sqrt(budget), "mean": 1 / budget}[normalisation]

    def weighted_surrogate(rows):
        z_s = norm * z[list(rows)].sum(0)
        total = 0.0
        for w, p, q_t in zip(weights, params, q):
            h = np.broadcast_to(np.asarray(p["penalty"]), (k,))
            total += w * (p["intercept"] + p["size_coef"] * np.log(budget) + p["b"] * q_t @ z_s - z_s ** 2 @ h)
        return total

    constant = sum(w * (p["intercept"] + p["size_coef"] * np.log(budget)) for w, p in zip(weights, params))
    selection = grasp_selection(z, q, params, weights, budget)
    assert len(selection.rows) == budget
    assert selection.gains.sum() == pytest.approx(weighted_surrogate(selection.rows) - constant)
    # its first pick is the best single example for the weighted surrogate at this budget
    singles = [weighted_surrogate([i]) for i in range(15)]
    assert selection.rows[0] == int(np.argmax(singles))


def test_grasp_objective_weights_alignment_and_penalty_per_task():
    q = np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])
    params = [{"b": 2.0, "penalty": [0.5]}, {"b": 1.0, "penalty": [0.1, 0.2, 0.3]}]
    v, d = grasp_objective(params, q, np.array([0.25, 0.75]), 3)
    np.testing.assert_allclose(v, 0.25 * 2.0 * q[0] + 0.75 * 1.0 * q[1])
    np.testing.assert_allclose(d, [0.25 * 0.5 + 0.75 * 0.1, 0.25 * 0.5 + 0.75 * 0.2, 0.25 * 0.5 + 0.75 * 0.3])

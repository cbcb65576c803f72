"""Tests for grasp_pipeline.surrogate: planted synthetic problems with known answers.

Every expected value here is computed independently of the code under test: utilities come
from the DESIGN §2 formula evaluated with explicit member lists, LCB bounds from
scipy.stats.norm, and correlations from scipy.stats.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from grasp_pipeline.config import SurrogateParams
from grasp_pipeline.evaluation.fidelity import holdout_fidelity
from grasp_pipeline.surrogates import (
    Datamodel,
    GradDot,
    Grasp,
    SizeOnly,
    SubsetData,
    Trak,
    choose_by_lcb,
    fit_surrogates,
    lcb,
    stratified_folds,
)

# -----------------------------------------------------------------------------
# synthetic problems


def pool_with_domains(rng: np.random.Generator, n: int, k: int, n_domains: int = 3):
    """Pool sketches with domain structure, so subset mixtures move alignment and penalty apart."""
    domain = rng.integers(0, n_domains, size=n)
    means = rng.normal(size=(n_domains, k))
    z = means[domain] + 0.8 * rng.normal(size=(n, k))
    return z, domain


def random_members(rng: np.random.Generator, domain: np.ndarray, min_size: int, max_size: int,
                   m: int) -> list[np.ndarray]:
    """m subsets of varying size with a random domain tilt each (no repeated members)."""
    n = len(domain)
    n_domains = domain.max() + 1
    out = []
    for _ in range(m):
        size = int(rng.integers(min_size, max_size + 1))
        tilt = rng.dirichlet(np.full(n_domains, 0.7))[domain] + 1e-3
        out.append(np.sort(rng.choice(n, size=size, replace=False, p=tilt / tilt.sum())))
    return out


def membership_matrix(members: list[np.ndarray], n: int) -> sp.csr_matrix:
    rows = np.concatenate([np.full(len(m), i) for i, m in enumerate(members)])
    cols = np.concatenate(members)
    return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(members), n))


def make_data(members: list[np.ndarray], z: np.ndarray, q: np.ndarray, utility: np.ndarray,
              n_holdout: int, samplers: np.ndarray | None = None) -> SubsetData:
    m = len(members)
    roles = np.array(["fit"] * (m - n_holdout) + ["holdout"] * n_holdout)
    if samplers is None:
        samplers = np.array(["uniform", "dirichlet"] * (m // 2) + ["uniform"] * (m % 2))
    return SubsetData(
        subset_ids=np.arange(m), roles=roles, samplers=samplers,
        sizes=np.array([len(x) for x in members]), membership=membership_matrix(members, len(z)),
        utility=np.asarray(utility, float).reshape(m, -1), pool_sketch=z.astype(np.float32),
        task_sketch=q, tasks=[f"task{t}" for t in range(len(q))])


NORM = {"none": lambda size: 1.0, "sqrt": lambda size: 1 / np.sqrt(size), "mean": lambda size: 1 / size}


def grasp_utility(members, z, q, a, s, b, c, normalisation):
    """The DESIGN §2 formula, evaluated subset by subset from explicit member lists."""
    z = z.astype(np.float32).astype(np.float64)  # what SubsetData stores
    out = []
    for rows in members:
        z_s = NORM[normalisation](len(rows)) * z[rows].sum(0)
        out.append(a + s * np.log(len(rows)) + b * float(q @ z_s) - c * float(z_s @ z_s))
    return np.array(out)


def planted_grasp(normalisation: str, a=0.7, s=0.3, b=1.5, c=0.8, seed=0, noise=1e-6,
                  m=160, n_holdout=40):
    rng = np.random.default_rng(seed)
    z, domain = pool_with_domains(rng, n=150, k=6)
    q = rng.normal(size=(1, 6))
    members = random_members(rng, domain, 3, 60, m)
    utility = grasp_utility(members, z, q[0], a, s, b, c, normalisation)
    utility = utility + noise * utility.std() * rng.normal(size=m)
    return make_data(members, z, q, utility, n_holdout), z, q, members


# -----------------------------------------------------------------------------
# GRASP recovers a planted answer


@pytest.mark.parametrize("normalisation", ["none", "sqrt", "mean"])
def test_grasp_recovers_planted_alignment_and_penalty(normalisation):
    """At the default ridge (1e-3, applied to the penalty column) b and c come back within 3 %.

    The ridge shrinks c by about 2 % on this noise-free problem, and the intercept and size
    coefficient absorb the difference, so only b and c are asserted here; the ridge-free fit
    below checks every coefficient.
    """
    b, c = 1.5, 0.8
    data, *_ = planted_grasp(normalisation, b=b, c=c)
    params = Grasp(size_term="log", normalisation=normalisation, geometry="identity").fit(
        data, data.fit_rows, 0)
    assert params["b"] == pytest.approx(b, rel=0.03)
    assert params["penalty"][0] == pytest.approx(c, rel=0.03)


@pytest.mark.parametrize("normalisation", ["none", "mean"])
def test_grasp_predicts_planted_holdout_near_perfectly(normalisation):
    data, *_ = planted_grasp(normalisation)
    model = Grasp(size_term="log", normalisation=normalisation, geometry="identity")
    predicted = model.predict(data, model.fit(data, data.fit_rows, 0), 0)
    holdout = data.holdout_rows
    actual = data.utility[holdout, 0]
    assert stats.pearsonr(predicted[holdout], actual).statistic > 0.999
    assert np.max(np.abs(predicted[holdout] - actual)) < 0.02 * np.ptp(actual)


@pytest.mark.parametrize("normalisation", ["none", "sqrt", "mean"])
def test_grasp_without_ridge_recovers_every_planted_coefficient(normalisation):
    a, s, b, c = -0.4, 0.25, 2.0, 0.5
    data, *_ = planted_grasp(normalisation, a=a, s=s, b=b, c=c, noise=0.0)
    params = Grasp(size_term="log", normalisation=normalisation, geometry="identity", ridge=0.0).fit(
        data, data.fit_rows, 0)
    assert params["intercept"] == pytest.approx(a, rel=1e-5)
    assert params["size_coef"] == pytest.approx(s, rel=1e-5)
    assert params["b"] == pytest.approx(b, rel=1e-5)
    assert params["penalty"][0] == pytest.approx(c, rel=1e-5)


def fixed_size_problem(size: int = 30):
    """A planted GRASP problem whose every subset has `size` members: φ(|S|) is constant there,
    a multiple of the intercept column, so the fit's free columns are collinear."""
    rng = np.random.default_rng(0)
    z, domain = pool_with_domains(rng, n=150, k=6)
    q = rng.normal(size=(1, 6))
    members = random_members(rng, domain, size, size, 160)
    utility = grasp_utility(members, z, q[0], 0.7, 0.3, 1.5, 0.8, "mean")
    utility = utility + 0.01 * utility.std() * rng.normal(size=len(members))
    return make_data(members, z, q, utility, 40), z, q, members


@pytest.mark.parametrize("geometry", ["identity", "diagonal"])
@pytest.mark.parametrize("size_term", ["linear", "log"])
def test_a_fixed_size_fit_with_a_size_term_predicts_as_the_fit_without_it(size_term, geometry):
    """The size column is redundant there; it must not change the alignment, the penalty or any
    prediction (the default ridge touches neither free column)."""
    data, *_ = fixed_size_problem()
    with_size = Grasp(size_term=size_term, normalisation="mean", geometry=geometry)
    without = Grasp(size_term="none", normalisation="mean", geometry=geometry)
    p_with, p_without = with_size.fit(data, data.fit_rows, 0), without.fit(data, data.fit_rows, 0)
    assert p_with["b"] == pytest.approx(p_without["b"], rel=1e-9)
    np.testing.assert_allclose(p_with["penalty"], p_without["penalty"], rtol=1e-9, atol=1e-12)
    spread = np.ptp(data.utility[:, 0])
    np.testing.assert_allclose(with_size.predict(data, p_with, 0), without.predict(data, p_without, 0),
                               rtol=0, atol=1e-9 * spread)


@pytest.mark.parametrize("geometry", ["identity", "diagonal"])
def test_a_fixed_size_fit_is_the_bounded_least_squares_optimum(geometry):
    """Against scipy's bounded solver on the design built from the member lists: the same
    residual sum of squares and the same predictions (the optimum of Xβ is unique)."""
    from scipy.optimize import lsq_linear

    data, z, q, members = fixed_size_problem()
    model = Grasp(size_term="log", normalisation="mean", geometry=geometry, ridge=0.0)
    params = model.fit(data, data.fit_rows, 0)
    z = z.astype(np.float32).astype(np.float64)
    z_s = np.stack([z[rows].mean(0) for rows in members])
    penalty = (z_s ** 2).sum(1, keepdims=True) if geometry == "identity" else z_s ** 2
    design = np.column_stack([np.ones(len(members)), np.log([len(m) for m in members]), z_s @ q[0], -penalty])
    fit, y = design[data.fit_rows], data.utility[data.fit_rows, 0]
    lower = np.r_[-np.inf, -np.inf, np.zeros(design.shape[1] - 2)]
    reference = lsq_linear(fit, y, bounds=(lower, np.inf), method="bvls", tol=1e-14).x
    ours = np.r_[params["intercept"], params["size_coef"], params["b"], params["penalty"]]
    assert np.sum((fit @ ours - y) ** 2) == pytest.approx(np.sum((fit @ reference - y) ** 2), rel=1e-9)
    np.testing.assert_allclose(model.predict(data, params, 0), design @ reference, rtol=0,
                               atol=1e-8 * np.ptp(y))


def test_the_b_only_ablation_is_the_bounded_optimum_without_a_penalty_column():
    """geometry="none" drops the interaction term: c = 0 and the rest is scipy's bounded fit of
    [1, log|S|, alignment]; the cross-validation path (normal equations) gives the same numbers."""
    from scipy.optimize import lsq_linear

    data, z, q, members = planted_grasp("mean", c=0.8, noise=0.01)
    model = Grasp(size_term="log", normalisation="mean", geometry="none")
    params = model.fit(data, data.fit_rows, 0)
    z = z.astype(np.float32).astype(np.float64)
    z_s = np.stack([z[rows].mean(0) for rows in members])
    design = np.column_stack([np.ones(len(members)), np.log([len(m) for m in members]), z_s @ q[0]])
    fit, y = design[data.fit_rows], data.utility[data.fit_rows, 0]
    reference = lsq_linear(fit, y, bounds=([-np.inf, -np.inf, 0], np.inf), method="bvls", tol=1e-14).x
    assert params["penalty"] == [0.0]
    np.testing.assert_allclose([params["intercept"], params["size_coef"], params["b"]], reference, rtol=1e-6)
    folds = model.fit_folds(data, [data.fit_rows])[0][0]
    np.testing.assert_allclose([folds["intercept"], folds["size_coef"], folds["b"], *folds["penalty"]],
                               [*reference, 0.0], rtol=1e-6, atol=1e-12)
    # the planted penalty is real, so dropping it must cost holdout accuracy against the full model
    full = Grasp(size_term="log", normalisation="mean", geometry="identity")
    error = {name: np.abs(m.predict(data, m.fit(data, data.fit_rows, 0), 0) - data.utility[:, 0])[data.holdout_rows]
             .mean() for name, m in (("none", model), ("identity", full))}
    assert error["none"] > 5 * error["identity"]


def test_diagonal_geometry_recovers_a_planted_diagonal_penalty():
    rng = np.random.default_rng(3)
    z, domain = pool_with_domains(rng, n=150, k=4)
    q = rng.normal(size=(1, 4))
    members = random_members(rng, domain, 3, 60, 200)
    h = np.array([0.2, 1.0, 0.0, 3.0])  # one coordinate carries no penalty at all
    utility = []
    for rows in members:
        z_s = z.astype(np.float32).astype(np.float64)[rows].mean(0)
        utility.append(0.1 + 0.5 * np.log(len(rows)) + 1.2 * q[0] @ z_s - z_s ** 2 @ h)
    data = make_data(members, z, q, np.array(utility), 40)
    params = Grasp(size_term="log", normalisation="mean", geometry="diagonal", ridge=0.0).fit(
        data, data.fit_rows, 0)
    np.testing.assert_allclose(params["penalty"], h, atol=1e-6)
    assert params["b"] == pytest.approx(1.2, rel=1e-5)


@pytest.mark.parametrize("geometry", ["identity", "diagonal"])
@pytest.mark.parametrize("b,c", [(-2.0, 0.8), (1.5, -0.8), (-1.0, -1.0)])
def test_grasp_alignment_and_penalty_stay_non_negative_when_data_say_otherwise(geometry, b, c):
    data, *_ = planted_grasp("mean", b=b, c=c, noise=0.01)
    params = Grasp(size_term="log", normalisation="mean", geometry=geometry).fit(data, data.fit_rows, 0)
    assert params["b"] >= 0.0
    assert min(params["penalty"]) >= 0.0


def test_grasp_fit_uses_only_the_rows_it_is_given():
    data, *_ = planted_grasp("mean", noise=0.01)
    model = Grasp(size_term="log", normalisation="mean")
    before = model.fit(data, data.fit_rows, 0)
    data.utility[data.holdout_rows] = np.random.default_rng(1).normal(size=(len(data.holdout_rows), 1)) * 1e3
    assert model.fit(data, data.fit_rows, 0) == before


# -----------------------------------------------------------------------------
# baselines


def test_datamodel_recovers_planted_additive_weights():
    rng = np.random.default_rng(5)
    n, m = 25, 300
    weights = rng.normal(size=n)
    mask = rng.random((m, n)) < 0.4
    mask[mask.sum(1) == 0, 0] = True
    members = [np.flatnonzero(row) for row in mask]
    utility = 1.3 + mask.astype(float) @ weights
    data = make_data(members, rng.normal(size=(n, 3)), rng.normal(size=(1, 3)), utility, 50)
    params = Datamodel(ridge=1e-6).fit(data, data.fit_rows, 0)
    np.testing.assert_allclose(params["weights"], weights, atol=1e-4)
    assert params["intercept"] == pytest.approx(1.3, abs=1e-4)
    predicted = Datamodel(ridge=1e-6).predict(data, params, 0)
    np.testing.assert_allclose(predicted, utility, atol=1e-4)


def test_grad_dot_recovers_planted_additive_alignment():
    rng = np.random.default_rng(6)
    z, domain = pool_with_domains(rng, n=80, k=5)
    q = rng.normal(size=(2, 5))
    members = random_members(rng, domain, 3, 30, 60)
    zf = z.astype(np.float32).astype(np.float64)
    utility = np.array([[0.5 + 0.1 * sum(zf[i] @ q[t] for i in rows) for t in range(2)] for rows in members])
    data = make_data(members, z, q, utility, 10)
    for t in range(2):
        params = GradDot().fit(data, data.fit_rows, t)
        assert params["intercept"] == pytest.approx(0.5, abs=1e-8)
        assert params["slope"] == pytest.approx(0.1, rel=1e-8)
    np.testing.assert_allclose(GradDot.example_scores(zf, q[1]), [zf[i] @ q[1] for i in range(80)])
    task_params = [GradDot().fit(data, data.fit_rows, t) for t in range(2)]
    assert task_params[0]["sketch_range"] == [0, 5]
    task_params[1]["sketch_range"] = [1, 3]  # a task fitted on one checkpoint block scores on it alone
    expected = [0.3 * 0.1 * zf[i] @ q[0] + 0.7 * 0.1 * zf[i, 1:3] @ q[1, 1:3] for i in range(80)]
    np.testing.assert_allclose(GradDot.weighted_example_scores(zf, q, task_params, np.array([0.3, 0.7])),
                               expected, rtol=1e-6)


def test_size_only_recovers_a_planted_size_slope():
    rng = np.random.default_rng(7)
    z, domain = pool_with_domains(rng, n=80, k=3)
    members = random_members(rng, domain, 2, 50, 40)
    utility = np.array([2.0 - 0.03 * len(rows) for rows in members])
    data = make_data(members, z, rng.normal(size=(1, 3)), utility, 10)
    params = SizeOnly().fit(data, data.fit_rows, 0)
    assert params["intercept"] == pytest.approx(2.0, rel=1e-8)
    assert params["slope"] == pytest.approx(-0.03, rel=1e-8)


def test_trak_scores_are_the_damped_kernel_regression_of_the_task_gradient():
    rng = np.random.default_rng(8)
    z = rng.normal(size=(40, 6))
    q = rng.normal(size=6)
    damping = 0.05
    gram = z.T @ z
    lam = damping * np.trace(gram) / 6
    expected = [q @ np.linalg.inv(gram + lam * np.eye(6)) @ z[i] for i in range(40)]
    np.testing.assert_allclose(Trak(damping).example_scores(z, q), expected, rtol=1e-9)


# -----------------------------------------------------------------------------
# configuration choice: folds, LCB, no leakage


def test_lcb_is_mean_minus_bonferroni_normal_quantile_times_standard_error():
    scores = np.array([0.31, 0.42, 0.18, 0.5, 0.27])
    n_candidates, delta = 7, 0.1
    mean, sd, bound = lcb(scores, n_candidates, delta)
    expected_sd = np.sqrt(((scores - scores.mean()) ** 2).sum() / 4)
    z = stats.norm.ppf(1 - delta / n_candidates)
    assert mean == pytest.approx(scores.mean())
    assert sd == pytest.approx(expected_sd)
    assert bound == pytest.approx(scores.mean() - z * expected_sd / np.sqrt(5))


def test_lcb_counts_an_undefined_fold_as_zero_skill():
    assert lcb(np.array([0.6, np.nan, 0.6]), 2, 0.1) == pytest.approx(lcb(np.array([0.6, 0.0, 0.6]), 2, 0.1))


def test_lcb_grows_more_conservative_with_more_candidates():
    scores = np.array([0.3, 0.5, 0.4, 0.6])
    assert lcb(scores, 20, 0.1)[2] < lcb(scores, 2, 0.1)[2]


def test_stratified_folds_partition_the_fit_rows_with_each_sampler_balanced():
    rng = np.random.default_rng(9)
    samplers = rng.choice(["uniform", "dirichlet", "other"], size=83)
    rows = np.sort(rng.choice(83, size=61, replace=False))
    folds = stratified_folds(samplers, rows, 5, seed=4)
    assert len(folds) == 5
    joined = np.concatenate(folds)
    assert len(joined) == len(set(joined.tolist()))  # disjoint
    assert set(joined.tolist()) == set(rows.tolist())  # union = all rows given
    for sampler in set(samplers[rows]):
        counts = [int((samplers[f] == sampler).sum()) for f in folds]
        assert max(counts) - min(counts) <= 1, (sampler, counts)


def test_stratified_folds_are_deterministic_in_seed():
    samplers = np.array(["a", "b"] * 20)
    rows = np.arange(40)
    first = stratified_folds(samplers, rows, 4, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(first, stratified_folds(samplers, rows, 4, seed=1)))
    assert not all(np.array_equal(x, y) for x, y in zip(first, stratified_folds(samplers, rows, 4, seed=2)))


def lcb_problem():
    data, *_ = planted_grasp("mean", noise=0.3, m=90, n_holdout=30)
    candidates = [Grasp(size_term="log", normalisation=n) for n in ("none", "sqrt", "mean")] + [SizeOnly()]
    return data, candidates


def test_choose_by_lcb_marks_exactly_the_highest_bound_candidate():
    data, candidates = lcb_problem()
    params = SurrogateParams(cv_folds=4, delta=0.1, seed=0)
    scores = choose_by_lcb(candidates, data, params)
    assert [c.candidate for c in scores] == list(range(len(candidates)))
    assert sum(c.chosen for c in scores) == 1
    bounds = [c.cv_lcb for c in scores]
    assert scores[int(np.argmax(bounds))].chosen
    for c in scores:
        assert len(c.fold_scores) == 4
        assert (c.cv_mean, c.cv_sd, c.cv_lcb) == pytest.approx(lcb(np.array(c.fold_scores), len(candidates), 0.1))


def test_choose_by_lcb_prefers_the_planted_configuration_over_size_alone():
    data, candidates = lcb_problem()
    scores = choose_by_lcb(candidates, data, SurrogateParams(cv_folds=4))
    assert scores[2].cv_mean > scores[3].cv_mean  # the planted "mean" GRASP beats size-only


def test_choose_by_lcb_ignores_holdout_utilities():
    data, candidates = lcb_problem()
    params = SurrogateParams(cv_folds=4, seed=2)
    before = choose_by_lcb(candidates, data, params)
    rng = np.random.default_rng(11)
    data.utility[data.holdout_rows] = rng.normal(size=(len(data.holdout_rows), 1)) * 100.0
    after = choose_by_lcb(candidates, data, params)
    assert after == before
    assert [c.chosen for c in after] == [c.chosen for c in before]


def test_fit_surrogates_parameters_and_fit_predictions_ignore_holdout_utilities():
    data, _ = lcb_problem()
    params = SurrogateParams(cv_folds=3, grasp_normalisations=("none", "mean"), grasp_geometries=("identity",),
                             datamodel_ridges=(1.0, 10.0))
    before = fit_surrogates(data, params)
    data.utility[data.holdout_rows] = -data.utility[data.holdout_rows] * 7.0 + 3.0
    after = fit_surrogates(data, params)
    for method in before:
        assert after[method].params == before[method].params, method
        assert after[method].candidates == before[method].candidates, method
        np.testing.assert_array_equal(after[method].predicted, before[method].predicted)


def test_fit_surrogates_refuses_too_few_fit_subsets_for_the_folds():
    data, *_ = planted_grasp("mean", m=12, n_holdout=4)  # 8 fit rows < 2 × 5 folds
    with pytest.raises(ValueError, match="cross-validation"):
        fit_surrogates(data, SurrogateParams(cv_folds=5))


def test_holdout_fidelity_is_scipy_spearman_on_holdout_rows_only():
    rng = np.random.default_rng(12)
    data, *_ = planted_grasp("mean", noise=0.2, m=60, n_holdout=24)
    predicted = data.utility + rng.normal(scale=0.05, size=data.utility.shape)
    report = holdout_fidelity(data, predicted)
    rows = data.holdout_rows
    expected = stats.spearmanr(predicted[rows, 0], data.utility[rows, 0]).statistic
    assert report["per_task"]["task0"]["spearman"] == pytest.approx(expected)
    assert report["per_task"]["task0"]["pearson"] == pytest.approx(
        stats.pearsonr(predicted[rows, 0], data.utility[rows, 0]).statistic)
    assert report["mean_spearman"] == pytest.approx(expected)
    for sampler in ("uniform", "dirichlet"):
        mine = rows[data.samplers[rows] == sampler]
        assert report["per_sampler"][sampler] == pytest.approx(
            stats.spearmanr(predicted[mine, 0], data.utility[mine, 0]).statistic)

    # scrambling every fit row, predicted and actual, changes nothing
    scrambled = predicted.copy()
    scrambled[data.fit_rows] = rng.normal(size=(len(data.fit_rows), 1))
    data.utility[data.fit_rows] = rng.normal(size=(len(data.fit_rows), 1))
    assert holdout_fidelity(data, scrambled) == report

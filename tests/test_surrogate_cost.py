"""The fast surrogate fit gives what the per-task reference fit gives: on real pipeline tables,
for every declared candidate, fold and task; and whatever the number of worker processes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.optimize import nnls

from grasp_pipeline.config import SurrogateParams
from grasp_pipeline.stages.tables import load_subset_data
from grasp_pipeline.stats import nan_mean, spearman, spearman_columns
from grasp_pipeline.surrogates import candidate_sets, choose_by_lcb, fit_surrogates, stratified_folds
from grasp_pipeline.surrogates.lcb import CandidateWorkers
from grasp_pipeline.surrogates.normal_equations import nnls_normal_equations

from .conftest import build_tables_until, tiny_params


@pytest.fixture(scope="module")
def real_data(tmp_path_factory):
    """SubsetData of a tiny pipeline run (real corpus, reference model, sketches, retrainings),
    with both samplers in every fold, so the size term is never collinear with the intercept."""
    params = tiny_params(plan={"uniform_fit": 12, "dirichlet_fit": 12})
    store = build_tables_until(tmp_path_factory.mktemp("cost") / "storage", "subset_outcomes", params)
    data, _, _ = load_subset_data(store)
    return data


def every_candidate(data) -> list:
    """The default (demo) candidate sets of every method, on these sketches."""
    return [c for cands in candidate_sets(SurrogateParams(), data.sketch_blocks).values() for c in cands]


def cv_rows(data, folds: int = 3) -> tuple[list[np.ndarray], list[np.ndarray]]:
    held_out = stratified_folds(data.samplers, data.fit_rows, folds, seed=0)
    return [np.setdiff1d(data.fit_rows, h) for h in held_out], held_out


def as_vector(params: dict) -> np.ndarray:
    """Every fitted number of a params dict, in a fixed order."""
    keys = ("intercept", "size_coef", "b", "penalty", "slope", "weights")
    return np.concatenate([np.atleast_1d(np.asarray(params[k], float)) for k in keys if k in params])


def test_fit_folds_equals_the_per_task_fit_for_every_candidate_on_real_tables(real_data):
    trains, _ = cv_rows(real_data)
    for candidate in every_candidate(real_data):
        fast = candidate.fit_folds(real_data, trains)
        for rows, fitted in zip(trains, fast):
            for task, params in enumerate(fitted):
                reference = candidate.fit(real_data, rows, task)
                assert {k: v for k, v in params.items() if not isinstance(v, (float, list))} == \
                       {k: v for k, v in reference.items() if not isinstance(v, (float, list))}
                expected = as_vector(reference)
                np.testing.assert_allclose(as_vector(params), expected, rtol=1e-6,
                                           atol=1e-9 * (1 + np.abs(expected).max()), err_msg=str(candidate))


def test_predict_tasks_equals_predict_column_by_column(real_data):
    trains, _ = cv_rows(real_data)
    for candidate in every_candidate(real_data):
        params = candidate.fit_folds(real_data, trains[:1])[0]
        expected = np.column_stack([candidate.predict(real_data, p, t) for t, p in enumerate(params)])
        np.testing.assert_allclose(candidate.predict_tasks(real_data, params), expected, rtol=1e-9,
                                   atol=1e-12 * np.abs(expected).max(), err_msg=str(candidate))


def reference_fold_scores(candidate, data, trains, held_out) -> list[float]:
    """The protocol spelled out: per-task fits, per-task predictions, scipy Spearman per (sampler, task)."""
    scores = []
    for rows, fold in zip(trains, held_out):
        predicted = np.column_stack([candidate.predict(data, candidate.fit(data, rows, t), t)
                                     for t in range(len(data.tasks))])
        scores.append(nan_mean(spearman(predicted[mine, t], data.utility[mine, t])
                               for sampler in sorted(set(data.samplers[fold]))
                               for mine in [fold[data.samplers[fold] == sampler]]
                               for t in range(len(data.tasks))))
    return scores


def test_the_lcb_choice_and_fold_scores_equal_the_per_task_protocol(real_data):
    params = SurrogateParams(cv_folds=3)
    trains, held_out = cv_rows(real_data)
    for method, candidates in candidate_sets(params, real_data.sketch_blocks).items():
        scored = choose_by_lcb(candidates, real_data, params)
        for candidate, score in zip(candidates, scored):
            np.testing.assert_allclose(score.fold_scores, reference_fold_scores(candidate, real_data, trains, held_out),
                                       atol=1e-9, err_msg=f"{method} {candidate}")


def test_fit_surrogates_gives_the_same_choice_and_params_in_two_worker_processes(real_data):
    params = SurrogateParams(cv_folds=3, workers=1)
    alone = fit_surrogates(real_data, params)
    spread = fit_surrogates(real_data, replace(params, workers=2))
    for method in alone:
        assert [c.fold_scores for c in spread[method].candidates] == [c.fold_scores for c in alone[method].candidates]
        assert spread[method].chosen.config == alone[method].chosen.config
        assert spread[method].params == alone[method].params
        np.testing.assert_array_equal(spread[method].predicted, alone[method].predicted)


def test_workers_refuse_a_negative_count_naming_the_setting(real_data):
    with pytest.raises(ValueError, match="surrogate.workers"):
        CandidateWorkers(real_data, -1)


def random_problem(rng, size: int, rows: int, zero_column: bool = False):
    x = rng.normal(size=(rows, size))
    if zero_column:
        x[:, size // 2] = 0.0
    y = x @ rng.normal(size=size) + rng.normal(size=rows)
    ridge = np.r_[0.0, np.full(size - 1, 0.1 * rows)]  # one unridged column, as GRASP's alignment
    augmented = np.vstack([x, np.diag(np.sqrt(ridge))])
    return x.T @ x + np.diag(ridge), x.T @ y, nnls(augmented, np.r_[y, np.zeros(size)])[0]


@pytest.mark.parametrize("rows", [5, 40, 200])
def test_nnls_on_normal_equations_equals_lawson_hanson_from_any_warm_start(rows):
    rng = np.random.default_rng(rows)
    for trial in range(20):
        gram, rhs, expected = random_problem(rng, 30, rows, zero_column=trial % 5 == 0)
        for start in (None, rng.random(30) < 0.5, np.ones(30, bool)):
            beta, passive = nnls_normal_equations(gram, rhs, start)
            np.testing.assert_allclose(beta, expected, atol=1e-8 * (1 + np.abs(expected).max()))
            assert (beta >= 0).all() and not beta[~passive].any()


def test_spearman_columns_is_spearman_column_by_column_including_undefined_columns():
    rng = np.random.default_rng(0)
    predicted, actual = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    predicted[:, 1] = 2.0  # constant: undefined
    actual[::3, 2] = actual[0, 2]  # ties
    expected = [spearman(predicted[:, j], actual[:, j]) for j in range(5)]
    np.testing.assert_allclose(spearman_columns(predicted, actual), expected, atol=1e-12)
    assert np.isnan(spearman_columns(predicted[:2], actual[:2])).all()

"""Fidelity as a function of the fit budget, sketch-dimension prefixes, and artifact cost."""

from __future__ import annotations

import numpy as np
import pytest

from grasp_pipeline.config import SurrogateParams
from grasp_pipeline.evaluation.fidelity import fidelity_by_fit_budget, holdout_fidelity, with_fit_budget
from grasp_pipeline.surrogates import Grasp, SubsetData, fit_all_tasks, fit_surrogates

from .test_surrogate import membership_matrix, pool_with_domains, random_members


def planted_problem(seed: int = 0, n: int = 120, k: int = 16, m: int = 60) -> SubsetData:
    """Utilities from the GRASP formula with known a, s, b, c plus a little noise."""
    rng = np.random.default_rng(seed)
    z, domain = pool_with_domains(rng, n, k)
    q = rng.normal(size=(2, k))
    members = random_members(rng, domain, 5, 40, m)
    sizes = np.array([len(s) for s in members])
    sums = np.stack([z[s].sum(0) for s in members]) / sizes[:, None]
    utility = np.stack([0.5 + 0.3 * np.log(sizes) + 2.0 * sums @ q[t] - 0.7 * (sums ** 2).sum(1)
                        for t in range(2)], axis=1) + 0.01 * rng.normal(size=(m, 2))
    samplers = np.where(np.arange(m) % 2 == 0, "uniform", "dirichlet")
    roles = np.where(np.arange(m) < 40, "fit", "holdout")
    return SubsetData(np.arange(m), roles, samplers, sizes, membership_matrix(members, n), utility,
                      z.astype(np.float32), q, ["t0", "t1"])


def test_a_fit_budget_keeps_that_many_fit_subsets_balanced_across_samplers():
    data = planted_problem()
    restricted = with_fit_budget(data, 16, seed=0)
    kept = restricted.fit_rows
    assert len(kept) == 16 and set(kept) <= set(data.fit_rows)
    counts = [np.sum(restricted.samplers[kept] == s) for s in ("uniform", "dirichlet")]
    assert abs(counts[0] - counts[1]) <= 1
    np.testing.assert_array_equal(restricted.holdout_rows, data.holdout_rows)


def test_fidelity_by_fit_budget_reports_each_budget_below_the_fit_count():
    data = planted_problem()
    params = SurrogateParams(cv_folds=3, grasp_size_terms=("log",), grasp_normalisations=("mean",),
                             grasp_geometries=("identity",), datamodel_ridges=(1.0,))
    rows = fidelity_by_fit_budget(data, params, budgets=(4, 12, 24, 40, 64), methods=("grasp", "size"))
    # 4 < 2 × folds and 40, 64 ≥ the 40 fit subsets are skipped
    assert sorted({r["fit_subsets"] for r in rows}) == [12, 24]
    grasp_24 = next(r for r in rows if r["fit_subsets"] == 24 and r["method"] == "grasp")
    assert grasp_24["holdout_spearman"] > 0.9  # the planted model is recoverable from 24 subsets


def test_each_fit_budget_reports_the_median_and_range_over_its_seeded_draws():
    data = planted_problem()
    noisy = data.utility + np.random.default_rng(1).normal(scale=0.3, size=data.utility.shape)
    data = SubsetData(data.subset_ids, data.roles, data.samplers, data.sizes, data.membership, noisy,
                      data.pool_sketch, data.task_sketch, data.tasks)  # noisy enough that draws disagree
    params = SurrogateParams(cv_folds=3, grasp_size_terms=("log",), grasp_normalisations=("mean",),
                             grasp_geometries=("identity",), datamodel_ridges=(1.0,), fidelity_draws=3, seed=7)
    row = next(r for r in fidelity_by_fit_budget(data, params, budgets=(8,), methods=("grasp",)))
    # each draw on its own: seeds 7, 8, 9 keep different fit subsets and score differently
    singles = [holdout_fidelity(restricted, fit_surrogates(restricted, params, ("grasp",))["grasp"].predicted)
               for restricted in (with_fit_budget(data, 8, seed) for seed in (7, 8, 9))]
    values = [r["mean_spearman"] for r in singles]
    assert len(set(values)) == 3
    assert row["draws"] == 3 and row["holdout_spearman"] == pytest.approx(np.median(values))
    assert (row["holdout_spearman_min"], row["holdout_spearman_max"]) == pytest.approx((min(values), max(values)))
    assert row["holdout_spearman.uniform"] == pytest.approx(np.median([r["per_sampler"]["uniform"] for r in singles]))


def test_a_sketch_dimension_prefix_equals_fitting_on_truncated_sketches():
    data = planted_problem()
    truncated = SubsetData(data.subset_ids, data.roles, data.samplers, data.sizes, data.membership, data.utility,
                           data.pool_sketch[:, :6], data.task_sketch[:, :6], data.tasks)
    prefix_params, prefix_pred = fit_all_tasks(Grasp(sketch_dim=6, geometry="diagonal"), data, data.fit_rows)
    full_params, full_pred = fit_all_tasks(Grasp(geometry="diagonal"), truncated, truncated.fit_rows)
    np.testing.assert_allclose(prefix_pred, full_pred, rtol=1e-9, atol=1e-9)
    assert len(prefix_params[0]["penalty"]) == 6


@pytest.mark.parametrize("size_term", ["none", "linear", "log"])
def test_every_size_term_is_a_valid_candidate(size_term):
    data = planted_problem()
    params, predicted = fit_all_tasks(Grasp(size_term=size_term), data, data.fit_rows)
    assert np.isfinite(predicted).all()
    assert params[0]["b"] >= 0 and min(params[0]["penalty"]) >= 0


def two_checkpoint_problem(informative_block: int) -> SubsetData:
    """The planted problem's sketches as one checkpoint block, next to a block of pure noise."""
    data = planted_problem()
    rng = np.random.default_rng(5)
    noise_z = rng.normal(size=data.pool_sketch.shape).astype(np.float32)
    noise_q = rng.normal(size=data.task_sketch.shape)
    blocks_z = [noise_z, data.pool_sketch] if informative_block == 1 else [data.pool_sketch, noise_z]
    blocks_q = [noise_q, data.task_sketch] if informative_block == 1 else [data.task_sketch, noise_q]
    return SubsetData(data.subset_ids, data.roles, data.samplers, data.sizes, data.membership, data.utility,
                      np.concatenate(blocks_z, 1), np.concatenate(blocks_q, 1), data.tasks, sketch_blocks=2)


@pytest.mark.parametrize("informative_block", [0, 1])
def test_the_lcb_picks_the_checkpoint_block_that_carries_the_signal(informative_block):
    """Each block is a candidate for every sketch method; the chosen fit records its columns."""
    data = two_checkpoint_problem(informative_block)
    params = SurrogateParams(cv_folds=4, grasp_size_terms=("log",), grasp_normalisations=("mean",),
                             grasp_geometries=("identity",), datamodel_ridges=(1.0,))
    fitted = fit_surrogates(data, params, methods=("grasp", "grad_dot", "trak"))
    k = data.pool_sketch.shape[1] // 2
    for method, fm in fitted.items():
        assert {c.config["sketch_block"] for c in fm.candidates} == {0, 1}, method
        assert fm.chosen.config["sketch_block"] == informative_block, method
        assert fm.params[0]["sketch_range"] == [informative_block * k, (informative_block + 1) * k]
    report = holdout_fidelity(data, fitted["grasp"].predicted)
    assert report["mean_spearman"] > 0.9


def test_a_checkpoint_block_equals_fitting_on_that_block_alone():
    data = two_checkpoint_problem(informative_block=1)
    alone = planted_problem()
    block_params, block_pred = fit_all_tasks(Grasp(sketch_block=1, geometry="diagonal"), data, data.fit_rows)
    _, alone_pred = fit_all_tasks(Grasp(geometry="diagonal"), alone, alone.fit_rows)
    np.testing.assert_allclose(block_pred, alone_pred, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="sketch_block 2 does not exist: the sketches have 2 checkpoint block"):
        Grasp(sketch_block=2).fit(data, data.fit_rows, 0)


def test_sketch_columns_must_split_into_equal_checkpoint_blocks():
    data = planted_problem()
    with pytest.raises(ValueError, match="16 sketch columns do not split into 3 equal checkpoint blocks"):
        SubsetData(data.subset_ids, data.roles, data.samplers, data.sizes, data.membership, data.utility,
                   data.pool_sketch, data.task_sketch, data.tasks, sketch_blocks=3)

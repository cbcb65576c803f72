"""Same config and seeds give the same sketches, plans and outcomes; LCB never sees holdout."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from grasp_pipeline import stages
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.surrogates import candidate_sets, choose_by_lcb

from .conftest import build_tables_until, tiny_params


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return (build_tables_until(tmp_path_factory.mktemp("a")), build_tables_until(tmp_path_factory.mktemp("b")))


def without_timings(frame: pl.DataFrame) -> pl.DataFrame:
    """Wall-clock columns are measurements, not results."""
    return frame.drop("seconds", strict=False)


KEYS = {"corpus_shards": ["example_id"], "task_sets": ["task", "example_id"], "gradient_sketches": ["example_id"],
        "task_sketches": ["task"], "subset_plan": ["subset_id"]}


@pytest.mark.parametrize("table", sorted(KEYS))
def test_same_config_and_seeds_give_identical_tables(two_runs, table):
    # Delta does not order rows across partition files, so compare by key
    first, second = (without_timings(store.read(table)).sort(KEYS[table]) for store in two_runs)
    assert_frame_equal(first, second)


def test_same_config_and_seeds_give_identical_outcomes(two_runs):
    first, second = (s.read("subset_outcomes").drop("seconds").sort("subset_id", "task", "repeat")
                     for s in two_runs)
    assert_frame_equal(first, second)


def test_same_seeds_give_the_same_reference_model(two_runs):
    first, second = (s.read("reference_models") for s in two_runs)
    assert first["model_version"][0] == second["model_version"][0]
    # the final θ's files: the same names, sizes and sha256, so the same bytes
    assert first["state"].to_list() == second["state"].to_list()


def test_lcb_choice_ignores_holdout_outcomes(two_runs):
    store = two_runs[0]
    params = tiny_params().surrogate
    data, _, _ = stages.load_subset_data(store)
    before = {m: choose_by_lcb(c, data, params) for m, c in candidate_sets(params).items()}
    rng = np.random.default_rng(7)
    holdout = data.holdout_rows
    data.utility[holdout] = rng.normal(size=data.utility[holdout].shape) * 100  # arbitrary holdout outcomes
    after = {m: choose_by_lcb(c, data, params) for m, c in candidate_sets(params).items()}
    for method in before:
        # repr() so that NaN fold scores (a fold too small for a rank correlation) compare equal
        assert repr([(c.config, c.fold_scores, c.chosen) for c in before[method]]) == \
               repr([(c.config, c.fold_scores, c.chosen) for c in after[method]]), method


def test_rerunning_a_stage_replaces_rather_than_duplicates(two_runs):
    store = two_runs[1]
    params = tiny_params()
    before = store.read("subset_plan")
    version = store.version("subset_plan")
    stages.run_subset_plan(store, params.plan)
    assert store.version("subset_plan") == version + 1
    assert_frame_equal(store.read("subset_plan"), before)


def test_changing_the_projection_seed_changes_the_sketches(two_runs, tmp_path):
    store = two_runs[1]
    workload = tiny_params().workload.build()
    original = without_timings(store.read("gradient_sketches"))
    from dataclasses import replace
    stages.run_gradient_sketches(store, workload, replace(tiny_params().sketch, seed=1))
    changed = without_timings(store.read("gradient_sketches"))
    assert not np.allclose(np.asarray(original["sketch"].to_list()), np.asarray(changed["sketch"].to_list()))
    stages.run_gradient_sketches(store, workload, tiny_params().sketch)  # restore for other tests
    assert_frame_equal(without_timings(store.read("gradient_sketches")).sort("example_id"),
                       original.sort("example_id"))


def test_rerunning_one_retraining_batch_replaces_only_that_batch(two_runs):
    store = two_runs[1]
    params = tiny_params()
    workload = params.workload.build()
    before = store.read("subset_outcomes").drop("seconds").sort("subset_id", "task", "repeat")
    batches = sorted(before["batch"].unique().to_list())
    assert len(batches) >= 2
    stages.run_subset_outcomes(store, workload, params.retrain, batches=[batches[0]])
    after = store.read("subset_outcomes").drop("seconds").sort("subset_id", "task", "repeat")
    assert_frame_equal(after, before)  # same seeds: the batch comes back identical, nothing duplicated


def test_rerunning_one_sketch_shard_replaces_only_that_shard(two_runs):
    from deltalake import DeltaTable

    store = two_runs[1]
    params = tiny_params()
    workload = params.workload.build()
    before = without_timings(store.read("gradient_sketches")).sort("example_id")
    files_before = set(DeltaTable(store.uri("gradient_sketches")).file_uris())
    shards = sorted(before["shard"].unique().to_list())
    assert len(shards) >= 2
    stages.run_gradient_sketches(store, workload, params.sketch, shards=[shards[0]])
    assert_frame_equal(without_timings(store.read("gradient_sketches")).sort("example_id"), before)
    replaced = files_before - set(DeltaTable(store.uri("gradient_sketches")).file_uris())
    assert replaced and all(f"shard={shards[0]}" in uri for uri in replaced)  # the other shards' files stay


def test_a_shard_step_reads_only_its_corpus_shard_and_sketches_it_as_the_full_run_did(two_runs, tmp_path):
    import shutil
    from pathlib import Path

    from deltalake import DeltaTable

    source = two_runs[0]
    store = DeltaStore(str(tmp_path))
    for table in ("corpus_shards", "task_sets", "reference_models"):
        store.write(table, source.read(table))
    shutil.copytree(Path(source.root) / "checkpoints", tmp_path / "checkpoints")  # the model's files, beside its row
    shards = store.partition_values("corpus_shards", "shard")
    assert len(shards) >= 2
    for uri in DeltaTable(store.uri("corpus_shards")).file_uris(file_pruning_predicate=[("shard", "!=", shards[0])]):
        Path(uri).unlink()  # every other shard's data is gone: a step that reads them fails
    params = tiny_params()
    stages.run_gradient_sketches(store, params.workload.build(), params.sketch, shards=[shards[0]])
    expected = without_timings(source.read("gradient_sketches")).filter(pl.col("shard") == shards[0])
    assert_frame_equal(without_timings(store.read("gradient_sketches")).sort("example_id"),
                       expected.sort("example_id"))
    with pytest.raises(ValueError, match="shard key\\(s\\) \\['nope'\\] are not in corpus_shards"):
        stages.run_gradient_sketches(store, params.workload.build(), params.sketch, shards=["nope"])


def test_shards_sketched_in_different_spaces_are_refused_until_all_are_resketched(two_runs):
    from dataclasses import replace

    store = two_runs[1]
    params = tiny_params()
    workload = params.workload.build()
    shards = sorted(store.read("gradient_sketches")["shard"].unique().to_list())
    stages.run_gradient_sketches(store, workload, replace(params.sketch, seed=5), shards=[shards[-1]])
    with pytest.raises(ValueError, match="mixes 2 projections.*rematerialise every gradient_sketches partition"):
        stages.run_task_sketches(store, workload)
    stages.run_gradient_sketches(store, workload, params.sketch, shards=[shards[-1]])  # restore
    stages.pool_sketches(store)


def test_sketches_missing_a_shard_are_refused_naming_it(two_runs, tmp_path):
    source = two_runs[0]
    store = DeltaStore(str(tmp_path))
    store.write("corpus_shards", source.read("corpus_shards"))
    sketches = source.read("gradient_sketches")
    last = sorted(sketches["shard"].unique().to_list())[-1]
    store.write("gradient_sketches", sketches.filter(pl.col("shard") != last))
    with pytest.raises(ValueError, match=f"does not cover corpus_shards.*{last}.*missing gradient_sketches"):
        stages.pool_sketches(store)


def test_outcomes_trained_on_another_plan_are_refused(two_runs, tmp_path):
    source = two_runs[0]
    store = DeltaStore(str(tmp_path))
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "subset_outcomes"):
        store.write(table, source.read(table))
    plan = source.read("subset_plan")
    store.write("subset_plan", plan.with_columns(
        pl.when(pl.col("subset_id") == 0).then(pl.col("members").list.slice(1)).otherwise(pl.col("members"))
        .alias("members")))
    with pytest.raises(ValueError, match="subset 0.*rematerialise subset_outcomes"):
        stages.load_subset_data(store)


def test_sketching_with_another_workload_than_the_reference_model_is_refused(two_runs):
    from grasp_pipeline.config import WorkloadParams

    other = WorkloadParams(order=3).build()
    with pytest.raises(ValueError, match="rematerialise reference_model"):
        stages.run_gradient_sketches(two_runs[0], other, tiny_params().sketch)

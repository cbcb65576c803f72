"""The whole graph, materialised through Dagster on a tiny config: tables, metadata, MLflow."""

from __future__ import annotations

import dagster as dg
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from grasp_pipeline.infra.storage import CONTRACT, DeltaStore
from grasp_pipeline.infra.tracking import default_tracking_uri

# one asset per Delta table (assets/catalog.py), the lineage table, and the trainer export (files)
TABLE_ASSETS = ["corpus_shards", "task_sets", "corpus_sources", "reference_models", "gradient_sketches",
                "task_sketches", "subset_plan", "subset_outcomes", "surrogates", "surrogate_candidates",
                "surrogate_predictions", "fidelity_report", "curation_rounds", "active_outcomes", "curated_selections",
                "mixture_weights", "selection_validation", "validation_verdict", "curation_test",
                "curation_test_verdict", "curation_test_dirt", "target_check", "target_check_summary"]
ASSETS = [*TABLE_ASSETS, "lineage", "trainer_export"]
ON_DEMAND_TABLES = {"mixture_updates"}  # written by `grasp mixture-update` / grasp_update_mixture, not by a graph run


def _materializations(results):
    return [(r, e) for r in results for e in r.get_asset_materialization_events()]


def test_every_asset_materialises_and_every_check_passes(pipeline_run):
    _, results, _ = pipeline_run
    assert [r.success for r in results] == [True, True, True, True]  # prepare, sketch, retrain, fit
    materialized = {e.asset_key.to_user_string() for _, e in _materializations(results)}
    assert materialized == set(ASSETS)
    evaluations = [e.event_specific_data for r in results for e in r.all_events
                   if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    from assets.checks import all_checks

    assert sorted(e.check_name for e in evaluations) == sorted(k.name for c in all_checks for k in c.check_keys)
    errors = [e for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR]
    assert all(e.passed for e in errors), [e.check_name for e in errors if not e.passed]


def test_every_table_has_the_contract_columns_and_types(pipeline_run):
    root, _, _ = pipeline_run
    store = DeltaStore(str(root))
    for table, columns in CONTRACT.items():
        if table in ON_DEMAND_TABLES:
            continue
        frame = store.read(table)
        assert frame.height > 0, table
        for column, dtype in columns.items():
            assert frame.schema[column] == dtype, (table, column, frame.schema[column])


def test_method_names_follow_the_design(pipeline_run):
    store = DeltaStore(str(pipeline_run[0]))
    assert set(store.read("surrogates")["method"]) == {"grasp", "grad_dot", "trak", "datamodel", "size"}
    # the equal-budget controls are methods too: random_pick, filter_dedup, grasp_proposal, random_at_counts
    assert set(store.read("curated_selections")["method"]) == {"grasp", "grasp_round0", "grasp_global", "grad_dot",
                                                              "datamodel", "random-0", "random-1", "full",
                                                              "random_pick", "filter_dedup", "grasp_proposal",
                                                              "random_at_counts"}
    assert set(store.read("mixture_weights")["method"]) == {"natural", "uniform", "grasp", "grasp_optimum", "regmix",
                                                            "loglinear", "random_pick"}


def test_prediction_actuals_equal_retrained_utilities(pipeline_run):
    store = DeltaStore(str(pipeline_run[0]))
    outcomes = store.read("subset_outcomes").group_by("subset_id", "task").agg(pl.col("utility").mean())
    joined = store.read("surrogate_predictions").join(outcomes, on=["subset_id", "task"], how="left")
    assert joined["utility"].null_count() == 0
    np.testing.assert_array_equal(joined["actual"].to_numpy(), joined["utility"].to_numpy())


def test_every_planned_subset_has_predictions_from_every_method(pipeline_run):
    store = DeltaStore(str(pipeline_run[0]))
    plan = store.read("subset_plan")
    tasks = store.read("task_sets")["task"].n_unique()
    counts = store.read("surrogate_predictions").group_by("method").len()
    assert set(counts["len"]) == {plan.height * tasks}


def test_utility_is_negative_loss(pipeline_run):
    outcomes = DeltaStore(str(pipeline_run[0])).read("subset_outcomes")
    np.testing.assert_array_equal(outcomes["utility"].to_numpy(), -outcomes["loss"].to_numpy())


def test_selections_hold_their_budget_and_only_pool_examples(pipeline_run):
    store = DeltaStore(str(pipeline_run[0]))
    pool = set(store.read("corpus_shards")["example_id"])
    selections = store.read("curated_selections")
    for (selection_id,), rows in selections.group_by("selection_id"):
        assert rows["example_id"].n_unique() == rows["budget"][0] == rows.height, selection_id
        assert set(rows["example_id"]) <= pool
    validated = store.read("selection_validation")
    mixtures = store.read("mixture_weights")
    assert set(validated["selection_id"]) == set(selections["selection_id"]) | set(mixtures["mixture_id"])
    assert set(validated.filter(pl.col("method").str.starts_with("mixture-"))["method"]) == {
        "mixture-natural", "mixture-uniform", "mixture-grasp", "mixture-grasp_optimum", "mixture-regmix",
        "mixture-loglinear", "mixture-random_pick"}
    assert validated.filter(pl.col("method") == "mixture-grasp")["budget"][0] == mixtures["budget"][0]


def test_metadata_carries_mlflow_run_table_version_rows_and_schema(pipeline_run):
    root, results, _ = pipeline_run
    client = MlflowClient(tracking_uri=default_tracking_uri(str(root)))
    store = DeltaStore(str(root))
    from assets.catalog import stage_of

    for result, event in _materializations(results):
        metadata = event.materialization.metadata
        asset = event.asset_key.to_user_string()
        if asset not in TABLE_ASSETS:
            continue
        run_id = metadata["mlflow_run_id"].value
        assert metadata["dagster/row_count"].value > 0, asset
        assert metadata["dagster/column_schema"].value.columns, asset
        assert metadata["dagster/uri"].value == store.uri(asset)
        run = client.get_run(run_id)
        assert run.data.tags["dagster.run_id"] == result.run_id
        assert run.data.tags["dagster.asset"] == stage_of(asset)  # the stage (op) that wrote the table
        assert asset in run.data.tags["dagster.assets"].split(",")
        versions = {k.removesuffix(".delta_version"): v.value for k, v in metadata.items()
                    if k.endswith(".delta_version")}
        assert versions, asset
        for table, version in versions.items():
            assert run.data.tags[f"delta_version.{table}"] == str(version)
            assert store.version(table) == version


def test_subset_outcomes_partitions_are_the_plan_batches(pipeline_run):
    root, results, instance = pipeline_run
    plan_batches = set(DeltaStore(str(root)).read("subset_plan")["batch"])
    assert set(instance.get_dynamic_partitions("retraining_batches")) == plan_batches
    outcome_events = [e for _, e in _materializations(results) if e.asset_key.to_user_string() == "subset_outcomes"]
    assert {e.partition for e in outcome_events} == plan_batches


def test_surrogates_record_the_mlflow_run_that_fitted_them(pipeline_run):
    root, results, _ = pipeline_run
    surrogates = DeltaStore(str(root)).read("surrogates")
    (event,) = [e for _, e in _materializations(results) if e.asset_key.to_user_string() == "surrogates"]
    assert set(surrogates["mlflow_run_id"]) == {event.materialization.metadata["mlflow_run_id"].value}


def test_outcome_metadata_reports_a_noise_ceiling_per_sampler(pipeline_run):
    _, results, _ = pipeline_run
    event = next(e for _, e in _materializations(results) if e.asset_key.to_user_string() == "subset_outcomes")
    metadata = event.materialization.metadata
    for sampler in ("uniform", "dirichlet"):
        assert 0.0 <= metadata[f"noise_ceiling.{sampler}"].value <= 1.0


def test_fidelity_report_covers_every_method_regime_and_fit_budget(pipeline_run):
    store = DeltaStore(str(pipeline_run[0]))
    report = store.read("fidelity_report")
    n_fit = store.read("subset_plan").filter(pl.col("role") == "fit").height
    methods = set(store.read("surrogates")["method"])
    for fit_subsets in (8, n_fit):
        rows = report.filter(pl.col("fit_subsets") == fit_subsets)
        assert {(m, s) for m, s in rows.select("method", "sampler").iter_rows()} >= {
            (m, s) for m in (methods if fit_subsets == n_fit else {"grasp", "grad_dot", "datamodel", "size"})
            for s in ("all", "uniform", "dirichlet")}
    assert report.filter(pl.col("sampler") == "uniform")["noise_ceiling"].null_count() == 0
    assert (report["artifact_seconds"] > 0).all()


def test_selection_task_weights_are_scaled_by_each_tasks_fit_utility_spread(pipeline_run):
    from grasp_pipeline.selection import scaled_task_weights
    from grasp_pipeline.stages import method_params

    store = DeltaStore(str(pipeline_run[0]))
    outcomes, plan = store.read("subset_outcomes"), store.read("subset_plan")
    _, tasks, grasp_params = method_params(store, "grasp")
    fit_ids = plan.filter(pl.col("role") == "fit")["subset_id"].to_list()
    spread = []
    for task in tasks:  # std over fit subsets of the repeat-mean utility, recomputed here by hand
        mine = outcomes.filter((pl.col("task") == task) & pl.col("subset_id").is_in(fit_ids))
        means = [np.mean(g["utility"].to_numpy()) for _, g in mine.group_by("subset_id")]
        spread.append(np.std(means, ddof=1))
    given = np.array([2.0] + [1.0] * (len(tasks) - 1))
    given = given / given.sum()
    expected = given / np.array(spread)
    np.testing.assert_allclose(scaled_task_weights(grasp_params, tasks, given, "utility_std"),
                               expected / expected.sum(), rtol=1e-9)
    np.testing.assert_array_equal(scaled_task_weights(grasp_params, tasks, given, "none"), given)
    with pytest.raises(ValueError, match="task_scale"):
        scaled_task_weights(grasp_params, tasks, given, "zscore")
    with pytest.raises(ValueError, match="rematerialise surrogates"):
        scaled_task_weights([{k: v for k, v in p.items() if k != "fit_utility_std"} for p in grasp_params],
                            tasks, given, "utility_std")


def test_every_table_under_the_root_is_an_asset_whose_latest_materialisation_names_its_version(pipeline_run):
    from pathlib import Path

    root, _, instance = pipeline_run
    store = DeltaStore(str(root))
    tables = sorted(p.parent.name for p in Path(root).glob("*/_delta_log"))
    assert "task_sets" in tables and "fidelity_report" in tables and "lineage" in tables
    for table in tables:
        event = instance.get_latest_materialization_event(dg.AssetKey(table))
        assert event is not None, f"table {table} is not in the Dagster catalog"
        metadata = event.asset_materialization.metadata
        assert metadata[f"{table}.delta_version"].value == store.version(table), table
        assert event.asset_materialization.tags["dagster/data_version"] == f"{table}@{store.version(table)}"

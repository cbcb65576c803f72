"""Jobs: the pipeline in three runs, because only subset_outcomes is partitioned.

`grasp_prepare` (corpus → sketches → plan) registers the retraining batches;
`grasp_retrain` materialises subset_outcomes for a range of batches in one run (or one
batch, for a rerun); `grasp_fit_and_curate` fits surrogates, curates, validates and mixes.
"""

from __future__ import annotations

import dagster as dg

PREPARE = ["corpus_shards", "reference_model", "gradient_sketches", "task_sketches", "subset_plan"]
RETRAIN = ["subset_outcomes"]
FIT_AND_CURATE = ["grasp_surrogate", "curated_selection", "mixture_weights", "selection_validation"]

prepare_job = dg.define_asset_job("grasp_prepare", selection=PREPARE,
                                  description="Corpus, reference model, sketches and the subset plan.")
retrain_job = dg.define_asset_job("grasp_retrain", selection=RETRAIN,
                                  description="Retrain the recipe on planned subsets (partitioned by batch).")
fit_and_curate_job = dg.define_asset_job("grasp_fit_and_curate", selection=FIT_AND_CURATE,
                                         description="Surrogates, curated selection and its validation, mixture.")
mixture_job = dg.define_asset_job("grasp_reoptimise_mixture", selection=["mixture_weights"],
                                  description="Re-optimise the domain mixture from the current surrogate.")

all_jobs = [prepare_job, retrain_job, fit_and_curate_job, mixture_job]


def materialize_everything(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict,
                           tags: dict | None = None) -> list[dg.ExecuteInJobResult]:
    """Runs prepare, retrain (all batches in one run) and fit-and-curate in order.

    Returns every run's result; stops after the first failed run, whose tables were left at
    their previous versions.
    """
    def ops_of(names):
        return {**run_config, "ops": {k: v for k, v in run_config.get("ops", {}).items() if k in names}}

    results = []
    prepare = defs.resolve_job_def("grasp_prepare").execute_in_process(
        run_config=ops_of(PREPARE), instance=instance, raise_on_error=False, tags=tags)
    results.append(prepare)
    if not prepare.success:
        return results
    batches = instance.get_dynamic_partitions("retraining_batches")
    range_tags = {**(tags or {}), "dagster/asset_partition_range_start": batches[0],
                  "dagster/asset_partition_range_end": batches[-1]}
    retrain = defs.resolve_job_def("grasp_retrain").execute_in_process(
        run_config=ops_of(RETRAIN), instance=instance, raise_on_error=False, tags=range_tags)
    results.append(retrain)
    if not retrain.success:
        return results
    results.append(defs.resolve_job_def("grasp_fit_and_curate").execute_in_process(
        run_config=ops_of(FIT_AND_CURATE), instance=instance, raise_on_error=False, tags=tags))
    return results

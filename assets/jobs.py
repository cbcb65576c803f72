"""Jobs: the pipeline in four runs, one per partitioning.

`grasp_prepare` (corpus, reference model, subset plan) registers the corpus shards and the
retraining batches as dynamic partitions; `grasp_sketch` materialises gradient_sketches for
a range of shards in one run (or one shard, for a rerun); `grasp_retrain` does the same for
subset_outcomes over retraining batches; `grasp_fit_and_curate` sketches the tasks, fits
surrogates, curates, validates and mixes.
"""

from __future__ import annotations

import dagster as dg

PREPARE = ["corpus_shards", "reference_model", "subset_plan"]
SKETCH = ["gradient_sketches"]
RETRAIN = ["subset_outcomes"]
FIT_AND_CURATE = ["task_sketches", "grasp_surrogate", "curated_selection", "mixture_weights", "selection_validation"]

# Which dynamic partitions each partitioned job runs over (all of them, as one range, by default).
JOB_PARTITIONS = {"grasp_sketch": "corpus_shards", "grasp_retrain": "retraining_batches"}
PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"

prepare_job = dg.define_asset_job("grasp_prepare", selection=PREPARE,
                                  description="Corpus, reference model and the subset plan; registers the "
                                              "shard and batch partitions.")
sketch_job = dg.define_asset_job("grasp_sketch", selection=SKETCH,
                                 description="Per-example gradient sketches of the pool (partitioned by shard).")
retrain_job = dg.define_asset_job("grasp_retrain", selection=RETRAIN,
                                  description="Retrain the recipe on planned subsets (partitioned by batch).")
fit_and_curate_job = dg.define_asset_job("grasp_fit_and_curate", selection=FIT_AND_CURATE,
                                         description="Task sketches, surrogates, curated selection and its "
                                                     "validation, mixture.")
mixture_job = dg.define_asset_job("grasp_reoptimise_mixture", selection=["mixture_weights"],
                                  description="Re-optimise the domain mixture from the current surrogate.")

all_jobs = [prepare_job, sketch_job, retrain_job, fit_and_curate_job, mixture_job]
PIPELINE = [("grasp_prepare", PREPARE), ("grasp_sketch", SKETCH), ("grasp_retrain", RETRAIN),
            ("grasp_fit_and_curate", FIT_AND_CURATE)]


def full_range_tags(instance: dg.DagsterInstance, job: str) -> dict[str, str]:
    """Run tags selecting every registered partition of a partitioned job (one run), else {}."""
    if job not in JOB_PARTITIONS:
        return {}
    keys = instance.get_dynamic_partitions(JOB_PARTITIONS[job])
    if not keys:
        raise ValueError(f"{job} has no {JOB_PARTITIONS[job]} partitions registered; run grasp_prepare first")
    return {PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]}


def materialize_everything(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict,
                           tags: dict | None = None) -> list[dg.ExecuteInJobResult]:
    """Runs prepare, sketch and retrain (all partitions, one run each), then fit-and-curate.

    Returns every run's result; stops after the first failed run, whose tables were left at
    their previous versions.
    """
    results = []
    for job, assets in PIPELINE:
        job_config = {**run_config, "ops": {k: v for k, v in run_config.get("ops", {}).items() if k in assets}}
        result = defs.resolve_job_def(job).execute_in_process(
            run_config=job_config, instance=instance, raise_on_error=False,
            tags={**(tags or {}), **full_range_tags(instance, job)})
        results.append(result)
        if not result.success:
            break
    return results

"""Retraining stage: which subsets to retrain (`subset_plan`) and what retraining gave.

`subset_outcomes` is partitioned by retraining batch (dynamic partitions registered by
`subset_plan` from its `batch` column), so a backfill can spread batches over executors, a
failed batch reruns alone, and each partition write replaces exactly its batch.
"""

import dagster as dg

from grasp_pipeline.stages import plan_subsets, retrain_outcomes

from .catalog import stage_asset
from .config import PlanConfig, RetrainConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import retraining_batches, sync_dynamic_partitions
from .resources import GraspStorage, WorkloadResource


@stage_asset("subset_plan", reads=["corpus_shards"], code_version="2", group_name="retraining", kinds={"deltalake"})
def subset_plan(context: dg.AssetExecutionContext, config: PlanConfig, storage: GraspStorage):
    """Subsets sampled by the `uniform` and `dirichlet` samplers, each `fit` or `holdout`, in batches."""
    params = to_params(config)
    result = run_stage(context, storage, params_dict(params), lambda run: plan_subsets(storage.store(), params))
    batches = storage.store().read("subset_plan")["batch"].unique().sort().to_list()
    sync_dynamic_partitions(context.instance, retraining_batches, batches)
    context.log.info(f"registered {len(batches)} retraining batches as partitions of subset_outcomes")
    return result


@stage_asset("subset_outcomes", reads=["subset_plan", "corpus_shards", "task_sets"], code_version="2",
             group_name="retraining", kinds={"torch", "deltalake"}, pool="torch", partitions_def=retraining_batches,
             backfill_policy=dg.BackfillPolicy.single_run())
def subset_outcomes(context: dg.AssetExecutionContext, config: RetrainConfig, storage: GraspStorage,
                    workload: WorkloadResource):
    """Per-task loss and utility (= −loss) of the recipe retrained on each planned subset of the batches."""
    params = to_params(config)
    batches = list(context.partition_keys)
    return run_stage(context, storage, {**params_dict(params), "batches": ",".join(batches)},
                     lambda run: retrain_outcomes(storage.store(), workload.build(), params, batches=batches))

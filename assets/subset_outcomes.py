"""Subset-outcomes stage: what retraining the recipe on each planned subset gave.

`subset_outcomes` is partitioned by retraining batch (dynamic partitions registered by
`subset_plan` from its `batch` column), so a backfill can spread batches over executors, a
failed batch reruns alone, and each partition write replaces exactly its batch.
"""

import dagster as dg

from grasp_pipeline.stages import run_subset_outcomes

from .catalog import stage_asset
from .config import RetrainConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import retraining_batches
from .resources import GraspStorage, WorkloadResource


@stage_asset("subset_outcomes", code_version="2",
             group_name="retraining", kinds={"torch", "deltalake"}, pool="torch", partitions_def=retraining_batches,
             backfill_policy=dg.BackfillPolicy.single_run())
def subset_outcomes(context: dg.AssetExecutionContext, config: RetrainConfig, storage: GraspStorage,
                    workload: WorkloadResource):
    """Per-task loss and utility (= −loss) of the recipe retrained on each planned subset of the batches."""
    params = to_params(config)
    batches = list(context.partition_keys)
    return run_stage(context, storage, {**params_dict(params), "batches": ",".join(batches)},
                     lambda run: run_subset_outcomes(storage.store(), workload.build(), params, batches=batches))

"""Sketch stage: per-example gradient sketches of the pool and task-gradient sketches.

`gradient_sketches` is partitioned by corpus shard (dynamic partitions registered by
`corpus_shards` from its `shard` column): a backfill spreads shards over executors, a
crashed shard reruns alone, and each partition write replaces exactly its shard.
"""

import dagster as dg

from grasp_pipeline.stages import compute_gradient_sketches, compute_task_sketches

from .catalog import stage_asset
from .config import SketchConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import corpus_shard_partitions
from .resources import GraspStorage, WorkloadResource


@stage_asset("gradient_sketches", reads=["reference_models", "corpus_shards"], code_version="3",
             group_name="sketches", kinds={"torch", "deltalake"}, pool="torch",
             partitions_def=corpus_shard_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def gradient_sketches(context: dg.AssetExecutionContext, config: SketchConfig, storage: GraspStorage,
                      workload: WorkloadResource):
    """z_i = P ∇θ ℓ(x_i; θ₀) for every pool example of the shards (vmap per-example gradients, seeded projection)."""
    params = to_params(config)
    shards = list(context.partition_keys)
    return run_stage(context, storage, {**params_dict(params), "shards": ",".join(shards)},
                     lambda run: compute_gradient_sketches(storage.store(), workload.build(), params, shards=shards))


@stage_asset("task_sketches", reads=["reference_models", "gradient_sketches", "task_sets"], code_version="3",
             group_name="sketches", kinds={"torch", "deltalake"}, pool="torch")
def task_sketches(context: dg.AssetExecutionContext, storage: GraspStorage, workload: WorkloadResource):
    """q_t = P ∇θ L_t(θ₀) per task, in the projection recorded by gradient_sketches (checked to cover the pool)."""
    return run_stage(context, storage, {},
                     lambda run: compute_task_sketches(storage.store(), workload.build()))

"""Gradient-sketches stage: per-example gradient sketches of the pool.

`gradient_sketches` is partitioned by corpus shard (dynamic partitions registered by
`corpus_shards` from its `shard` column): a backfill spreads shards over executors, a
crashed shard reruns alone, and each partition write replaces exactly its shard.
"""

import dagster as dg

from grasp_pipeline.stages import run_gradient_sketches

from .catalog import stage_asset
from .config import SketchConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import corpus_shard_partitions
from .resources import GraspStorage, WorkloadResource


@stage_asset("gradient_sketches", code_version="3",
             group_name="sketches", kinds={"torch", "deltalake"}, pool="torch",
             partitions_def=corpus_shard_partitions, backfill_policy=dg.BackfillPolicy.single_run())
def gradient_sketches(context: dg.AssetExecutionContext, config: SketchConfig, storage: GraspStorage,
                      workload: WorkloadResource):
    """z_i = P ∇θ ℓ(x_i; θ₀) for every pool example of the shards (vmap per-example gradients, seeded projection)."""
    params = to_params(config)
    shards = list(context.partition_keys)
    return run_stage(context, storage, {**params_dict(params), "shards": ",".join(shards)},
                     lambda run: run_gradient_sketches(storage.store(), workload.build(), params, shards=shards))

"""Corpus-shards stage: the pool (`corpus_shards`) and the held-out task sets (`task_sets`).

Materialising the pool registers its shards as the partitions of `gradient_sketches`.
"""

import dagster as dg

from grasp_pipeline.stages import run_corpus_shards

from .catalog import stage_asset
from .config import CorpusConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import corpus_shard_partitions, sync_dynamic_partitions
from .resources import GraspStorage, WorkloadResource


@stage_asset("corpus_shards", code_version="2", group_name="corpus", kinds={"deltalake", "polars"})
def corpus_shards(context: dg.AssetExecutionContext, config: CorpusConfig, storage: GraspStorage,
                  workload: WorkloadResource):
    """Pool examples (byte pieces of documents, or whole rows such as images, as the workload
    says), sharded per domain, and the task sets."""
    params = to_params(config)
    results = run_stage(context, storage, params_dict(params),
                        lambda run: run_corpus_shards(storage.store(), params, workload.example_bytes,
                                                      workload.build()))
    shards = storage.store().partition_values("corpus_shards", "shard")
    sync_dynamic_partitions(context.instance, corpus_shard_partitions, shards)
    context.log.info(f"registered {len(shards)} corpus shards as partitions of gradient_sketches")
    return results

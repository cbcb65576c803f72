"""Reference model: the warm-up checkpoints at which every gradient is sketched."""

import dagster as dg

from grasp_pipeline.stages import train_reference_model

from .config import ReferenceConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@dg.asset(pool="torch", code_version="2", group_name="sketches", deps=["corpus_shards"], kinds={"torch", "deltalake"})
def reference_model(context: dg.AssetExecutionContext, config: ReferenceConfig, storage: GraspStorage,
                    workload: WorkloadResource) -> dg.MaterializeResult:
    """The proxy model warmed up on a pool sample; its checkpoints at `sketch_steps` (and final
    parameters) are stored in `reference_models`."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: train_reference_model(storage.store(), workload.build(), params))

"""Reference model: the warm-up checkpoints at which every gradient is sketched (`reference_models`)."""

import dagster as dg

from grasp_pipeline.stages import run_reference_model

from .catalog import stage_asset
from .config import ReferenceConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("reference_model", code_version="3", group_name="sketches",
             kinds={"torch", "deltalake"}, pool="torch")
def reference_model(context: dg.AssetExecutionContext, config: ReferenceConfig, storage: GraspStorage,
                    workload: WorkloadResource):
    """The proxy model warmed up on a pool sample; its checkpoints at `sketch_steps` (and final
    parameters) are stored in `reference_models`; its training loss per step goes to MLflow."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_reference_model(storage.store(), workload.build(), params))

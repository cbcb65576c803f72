"""Validation stage: every selection and a sample of every mixture retrained at the same budget."""

import dagster as dg

from grasp_pipeline.stages import run_selection_validation

from .catalog import stage_asset
from .config import ValidationConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("selection_validation", code_version="3", group_name="curation", kinds={"torch", "deltalake"},
             pool="torch")
def selection_validation(context: dg.AssetExecutionContext, config: ValidationConfig, storage: GraspStorage,
                         workload: WorkloadResource):
    """Per-task utility of the outcome recipe retrained on each selection and on a sample of each mixture."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_selection_validation(storage.store(), workload.build(), params))

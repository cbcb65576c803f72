"""Curation stage: selections at a budget per method, and their retraining validation."""

import dagster as dg

from grasp_pipeline.stages import curate_selections, validate_selections

from .config import SelectionConfig, ValidationConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@dg.asset(code_version="2", group_name="curation", deps=["grasp_surrogate", "gradient_sketches", "task_sketches"],
          kinds={"deltalake"})
def curated_selection(context: dg.AssetExecutionContext, config: SelectionConfig,
                      storage: GraspStorage) -> dg.MaterializeResult:
    """Residual-greedy GRASP selection plus grad_dot/datamodel top-k, random and full references."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params), lambda run: curate_selections(storage.store(), params))


@dg.asset(pool="torch", code_version="2", group_name="curation", deps=["curated_selection", "mixture_weights", "subset_outcomes"],
          kinds={"torch", "deltalake"})
def selection_validation(context: dg.AssetExecutionContext, config: ValidationConfig, storage: GraspStorage,
                         workload: WorkloadResource) -> dg.MaterializeResult:
    """Per-task utility of the outcome recipe retrained on each selection and on a sample of each mixture."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: validate_selections(storage.store(), workload.build(), params))

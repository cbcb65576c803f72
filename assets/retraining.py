"""Retraining stage: which subsets to retrain (`subset_plan`) and what retraining gave."""

import dagster as dg

from grasp_pipeline.stages import plan_subsets, retrain_outcomes

from .config import PlanConfig, RetrainConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@dg.asset(code_version="1", group_name="retraining", deps=["corpus_shards"], kinds={"deltalake"})
def subset_plan(context: dg.AssetExecutionContext, config: PlanConfig, storage: GraspStorage) -> dg.MaterializeResult:
    """Subsets sampled by the `uniform` and `dirichlet` samplers, each `fit` or `holdout`."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params), lambda run: plan_subsets(storage.store(), params))


@dg.asset(code_version="1", group_name="retraining", deps=["subset_plan", "corpus_shards"],
          kinds={"torch", "deltalake"})
def subset_outcomes(context: dg.AssetExecutionContext, config: RetrainConfig, storage: GraspStorage,
                    workload: WorkloadResource) -> dg.MaterializeResult:
    """Per-task loss and utility (= −loss) of the recipe retrained on every planned subset."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: retrain_outcomes(storage.store(), workload.build(), params))

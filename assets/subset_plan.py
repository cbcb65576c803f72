"""Subset-plan stage: which subsets to retrain (`subset_plan`).

Materialising the plan registers its `batch` column as the partitions of `subset_outcomes`.
"""

import dagster as dg

from grasp_pipeline.stages import run_subset_plan

from .catalog import stage_asset
from .config import PlanConfig, to_params
from .materialize import params_dict, run_stage
from .partitions import retraining_batches, sync_dynamic_partitions
from .resources import GraspStorage


@stage_asset("subset_plan", code_version="2", group_name="retraining", kinds={"deltalake"})
def subset_plan(context: dg.AssetExecutionContext, config: PlanConfig, storage: GraspStorage):
    """Subsets sampled by the `uniform` and `dirichlet` samplers, each `fit` or `holdout`, in batches."""
    params = to_params(config)
    result = run_stage(context, storage, params_dict(params), lambda run: run_subset_plan(storage.store(), params))
    batches = storage.store().read("subset_plan")["batch"].unique().sort().to_list()
    sync_dynamic_partitions(context.instance, retraining_batches, batches)
    context.log.info(f"registered {len(batches)} retraining batches as partitions of subset_outcomes")
    return result

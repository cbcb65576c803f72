"""Task-sketches stage: each task's mean-loss gradient sketch, in the projection of gradient_sketches."""

import dagster as dg

from grasp_pipeline.stages import run_task_sketches

from .catalog import stage_asset
from .materialize import run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("task_sketches", code_version="3", group_name="sketches", kinds={"torch", "deltalake"}, pool="torch")
def task_sketches(context: dg.AssetExecutionContext, storage: GraspStorage, workload: WorkloadResource):
    """q_t = P ∇θ L_t(θ₀) per task, in the projection recorded by gradient_sketches (checked to cover the pool)."""
    return run_stage(context, storage, {},
                     lambda run: run_task_sketches(storage.store(), workload.build()))

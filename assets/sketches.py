"""Sketch stage: per-example gradient sketches of the pool and task-gradient sketches."""

import dagster as dg

from grasp_pipeline.stages import compute_gradient_sketches, compute_task_sketches

from .config import SketchConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@dg.asset(pool="torch", code_version="1", group_name="sketches", deps=["reference_model", "corpus_shards"],
          kinds={"torch", "deltalake"})
def gradient_sketches(context: dg.AssetExecutionContext, config: SketchConfig, storage: GraspStorage,
                      workload: WorkloadResource) -> dg.MaterializeResult:
    """z_i = P ∇θ ℓ(x_i; θ₀) for every pool example (vmap per-example gradients, seeded projection)."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: compute_gradient_sketches(storage.store(), workload.build(), params))


@dg.asset(pool="torch", code_version="1", group_name="sketches", deps=["reference_model", "gradient_sketches"],
          kinds={"torch", "deltalake"})
def task_sketches(context: dg.AssetExecutionContext, storage: GraspStorage,
                  workload: WorkloadResource) -> dg.MaterializeResult:
    """q_t = P ∇θ L_t(θ₀) per task, in the projection recorded by gradient_sketches."""
    return run_stage(context, storage, {},
                     lambda run: compute_task_sketches(storage.store(), workload.build()))

"""Mixture-weights stage: domain weights that maximise the expected GRASP utility."""

import dagster as dg

from grasp_pipeline.stages import run_mixture_weights

from .catalog import stage_asset
from .config import MixtureConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage


@stage_asset("mixture_weights", code_version="1", group_name="mixture", kinds={"deltalake"})
def mixture_weights(context: dg.AssetExecutionContext, config: MixtureConfig, storage: GraspStorage):
    """`natural`, `uniform`, the closed loop's `grasp` pick, the plain optimum `grasp_optimum`, and the
    peer mixers `regmix` and `loglinear`, with their predicted utility."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params), lambda run: run_mixture_weights(storage.store(), params))

"""Curation-loop stage: candidates retrained on dev, added to the fit set, refit; the LCB pick."""

import dagster as dg

from grasp_pipeline.stages import run_curation_loop

from .catalog import stage_asset
from .config import LoopConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("curation_loop", pool="torch", code_version="4", group_name="curation", kinds={"torch", "deltalake"})
def curation_loop(context: dg.AssetExecutionContext, config: LoopConfig, storage: GraspStorage,
                  workload: WorkloadResource):
    """Rounds of selection and mixture candidates retrained on dev (sampler `active`), the refit surrogate's
    calibration per round, and the pick with the best lower confidence bound over bootstrap refits."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_curation_loop(storage.store(), workload.build(), params))

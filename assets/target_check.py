"""Target-check stage: the proxy's picks retrained with the target recipe (after the curation test)."""

import dagster as dg

from grasp_pipeline.config import PipelineParams
from grasp_pipeline.stages import run_target_check

from .catalog import stage_asset
from .config import TargetConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("target_check", pool="torch", code_version="2", group_name="curation", kinds={"torch", "deltalake"})
def target_check(context: dg.AssetExecutionContext, config: TargetConfig, storage: GraspStorage,
                 workload: WorkloadResource):
    """Proxy-vs-target rank agreement over mixtures (Spearman with an interval), and whether the GRASP
    picks stay ahead of natural and random when retrained with a bigger model / longer recipe."""
    params = to_params(config)
    proxy_params = to_params(workload)
    target = PipelineParams(workload=proxy_params, target=params).target_workload()
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_target_check(storage.store(), proxy_params.build(), target.build(), params))

"""Curated-selection stage: selections at a budget per method (`curated_selections`)."""

import dagster as dg

from grasp_pipeline.stages import run_curated_selection

from .catalog import stage_asset
from .config import SelectionConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage


@stage_asset("curated_selection", code_version="2", group_name="curation", kinds={"deltalake"})
def curated_selection(context: dg.AssetExecutionContext, config: SelectionConfig, storage: GraspStorage):
    """The closed loop's GRASP pick (composition first), the global residual greedy (grasp_global),
    grad_dot/datamodel top-k, random and full references."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params), lambda run: run_curated_selection(storage.store(), params))

"""Trainer-export stage: the answer in the forms trainers take (files, not a table; grasp_pipeline/ops/export.py).

Per mixture a `{domain: weight}` JSON/YAML with the Hugging Face `interleave_datasets` form
and a Megatron-style blend string; per selection a Parquet manifest of source, document id,
byte offset and length. `grasp export` writes the same from the command line.
"""

import dagster as dg

from grasp_pipeline.ops.export import export_for_trainers

from .catalog import stage_asset
from .config import ExportConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage


@stage_asset("trainer_export", code_version="1", group_name="export", kinds={"parquet", "json"})
def trainer_export(context: dg.AssetExecutionContext, config: ExportConfig, storage: GraspStorage):
    """Every mixture's domain weights (JSON/YAML, Hugging Face interleave_datasets and Megatron blend forms) and
    every selection's byte-range manifest (Parquet), under the export destination (default: <root>/exports)."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params), lambda run: export_for_trainers(storage.store(), params))

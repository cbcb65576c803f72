"""The pipeline's stages as plain functions: read input tables, compute, write output tables.

One module per stage, named like the stage (its Dagster op and its module under `assets/`),
holding its run function `run_<stage>`; `registry` declares every stage once (`STAGES`: tables
written and read, settings section, workload) and the rest is derived from it. `base` holds
`StageResult`, `TableWrite` and the `stage` decorator, `tables` the readers the stages share,
`figures` their plots and `graph` the whole graph in order. Nothing here imports Dagster.
"""

from .base import StageResult, TableWrite, stage
from .gradient_sketches import make_sketcher
from .graph import stage_plan
from .registry import STAGE, STAGES, Stage
from .surrogates import artifact_seconds
from .tables import (
    encoded_pool_and_tasks,
    load_reference_checkpoints,
    load_reference_model,
    load_subset_data,
    members_digest,
    method_params,
    pool_sketches,
    read_pool,
    read_tasks,
)

# every stage's run function, `run_<stage>`, by its name (trainer_export's lives in grasp_pipeline.ops.export)
globals().update({f"run_{s.name}": s.run for s in STAGES if s.run is not None})

__all__ = ["STAGE", "STAGES", "Stage", "StageResult", "TableWrite", "artifact_seconds", "encoded_pool_and_tasks",
           "load_reference_checkpoints", "load_reference_model", "load_subset_data", "make_sketcher",
           "members_digest", "method_params", "pool_sketches", "read_pool", "read_tasks", "stage", "stage_plan",
           *(f"run_{s.name}" for s in STAGES if s.run is not None)]

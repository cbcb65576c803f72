"""The pipeline's stages as plain functions: read input tables, compute, write output tables.

One module per asset of DESIGN §4 (the same names as in `assets/`): `corpus`, `reference`,
`sketches`, `retraining` (plan and outcomes), `surrogates`, `curation`, `mixture`, `mixture_update`,
`curation_loop`, `validation`, `curation_test`; `base` holds `StageResult`, `TableWrite` and the `stage` decorator,
`tables`
the readers the stages share, `figures` their plots and `graph` the whole graph in order.
Nothing here imports Dagster.
"""

from .base import StageResult, TableWrite, stage
from .corpus import build_corpus
from .curation import curate_selections
from .curation_loop import run_curation_loop
from .curation_test import run_curation_test
from .graph import stage_plan
from .mixture import optimise_mixtures
from .mixture_update import update_mixture
from .reference import train_reference_model
from .retraining import plan_subsets, retrain_outcomes
from .sketches import compute_gradient_sketches, compute_task_sketches, make_sketcher
from .surrogates import artifact_seconds, fit_surrogate_tables
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
from .target_check import run_target_check
from .validation import validate_selections

__all__ = ["StageResult", "TableWrite", "artifact_seconds", "build_corpus", "compute_gradient_sketches",
           "compute_task_sketches", "curate_selections", "encoded_pool_and_tasks", "fit_surrogate_tables",
           "load_reference_checkpoints", "load_reference_model", "load_subset_data", "make_sketcher",
           "members_digest", "method_params", "optimise_mixtures", "plan_subsets", "pool_sketches", "read_pool",
           "read_tasks", "retrain_outcomes", "run_curation_loop", "run_curation_test", "run_target_check", "stage",
           "stage_plan", "train_reference_model", "update_mixture",
           "validate_selections"]

"""The whole graph without Dagster, in dependency order (for benchmarks, scripts and tests)."""

from __future__ import annotations

from ..infra.storage import DeltaStore
from ..workloads.base import Workload
from .corpus import build_corpus
from .curation import curate_selections
from .curation_loop import run_curation_loop
from .curation_test import run_curation_test
from .mixture import optimise_mixtures
from .reference import train_reference_model
from .retraining import plan_subsets, retrain_outcomes
from .sketches import compute_gradient_sketches, compute_task_sketches
from .surrogates import fit_surrogate_tables
from .target_check import run_target_check
from .validation import validate_selections


def stage_plan(store: DeltaStore, params, workload: Workload) -> list[tuple[str, object]]:
    """Returns (asset name, zero-argument call) for every stage, in dependency order: the
    whole graph without Dagster, for benchmarks and scripts."""
    return [
        ("corpus_shards", lambda: build_corpus(store, params.corpus, params.workload.example_bytes, workload)),
        ("reference_model", lambda: train_reference_model(store, workload, params.reference)),
        ("gradient_sketches", lambda: compute_gradient_sketches(store, workload, params.sketch)),
        ("task_sketches", lambda: compute_task_sketches(store, workload, params.sketch.chunk_size)),
        ("subset_plan", lambda: plan_subsets(store, params.plan)),
        ("subset_outcomes", lambda: retrain_outcomes(store, workload, params.retrain)),
        ("grasp_surrogate", lambda: fit_surrogate_tables(store, params.surrogate)),
        ("curation_loop", lambda: run_curation_loop(store, workload, params.loop)),
        ("curated_selection", lambda: curate_selections(store, params.selection)),
        ("mixture_weights", lambda: optimise_mixtures(store, params.mixture)),
        ("selection_validation", lambda: validate_selections(store, workload, params.validation)),
        ("curation_test", lambda: run_curation_test(store, workload, params.test)),
        ("target_check", lambda: run_target_check(store, workload, params.target_workload().build(), params.target)),
    ]

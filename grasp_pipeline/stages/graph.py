"""The whole graph without Dagster, in dependency order (for benchmarks, scripts and tests)."""

from __future__ import annotations

from ..infra.storage import DeltaStore
from ..workloads.base import Workload
from .registry import STAGES


def stage_plan(store: DeltaStore, params, workload: Workload) -> list[tuple[str, object]]:
    """Returns (stage name, zero-argument call) for every stage that writes tables and runs when its
    inputs change (not `mixture_update`, run on demand, nor `trainer_export`, which writes files), in
    dependency order: the whole graph without Dagster, for benchmarks and scripts."""
    return [(stage.name, stage.plan(store, params, workload)) for stage in STAGES
            if stage.tables and not stage.on_demand]

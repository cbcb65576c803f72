"""The code location: merges every asset, check, resource, job, schedule and sensor.

Run config defaults are the profile of GRASP_PROFILE with GRASP_CONFIG's overrides when the
code location loads (the `demo` profile, i.e. the library dataclasses' defaults, when unset;
assets/config.py). `grasp config --profile smoke --job NAME` prints another profile's run
config to paste into the launchpad. (Jobs take no `config=` preset: a job-level default
config breaks materialising a subset of the job's assets.) Every Delta table is an asset
(assets/catalog.py); `lineage` is an external one. Each stage of `grasp_pipeline.stages.STAGES` is
the op of the module named like it here.
"""

import importlib

import dagster as dg

from grasp_pipeline.stages import STAGES

from . import checks
from .catalog import LINEAGE_SPEC
from .jobs import jobs
from .maintenance import maintenance_job
from .resources import GraspStorage, WorkloadResource
from .schedules import build_schedules
from .sensors import build_sensors

# one module per stage, named like it (assets/<stage>.py, whose op is the stage)
STAGE_MODULES = [importlib.import_module(f"{__package__}.{stage.name}") for stage in STAGES]


def build_definitions(executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The code location; `executor` (default: Dagster's multiprocess executor) is what a
    deployment profile changes (assets.deploy.definitions_celery, deploy/k8s)."""
    return dg.Definitions(
        assets=[*dg.load_assets_from_modules(STAGE_MODULES), LINEAGE_SPEC],
        asset_checks=checks.all_checks,
        jobs=[*jobs.values(), maintenance_job],
        schedules=build_schedules(),
        sensors=build_sensors(),
        resources={"storage": GraspStorage(), "workload": WorkloadResource()},
        executor=executor,
    )


defs = build_definitions()

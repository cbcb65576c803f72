"""Run configs: the library's parameters as the ops and resources config of a Dagster run.

`grasp run`, `grasp config`, the schedule and the sensors all build run configs here, so a
launchpad paste, a CLI run and an automated run of the same parameters are the same run.
"""

from __future__ import annotations

import dataclasses

from grasp_pipeline.stages import STAGES

from .jobs import JOB_ASSETS

# the stage (= op) -> the parameter section that configures it (task_sketches has none)
SECTION_OF_STAGE = {stage.name: stage.section for stage in STAGES if stage.section}
# stages that take no workload resource (no model, no byte encoding)
WITHOUT_WORKLOAD = {stage.name for stage in STAGES if not stage.workload}


def listify(values: dict) -> dict:
    """Tuples to lists: Dagster config has lists, not tuples."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def run_config_for(params, root: str, tracking_uri: str = "") -> dict:
    """Returns the Dagster run config that materialises the whole graph with `params`."""
    return {
        "ops": {stage: {"config": listify(dataclasses.asdict(getattr(params, section)))}
                for stage, section in SECTION_OF_STAGE.items()},
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "resources": {
            "storage": {"config": {"root": root, "tracking_uri": tracking_uri}},
            "workload": {"config": listify(dataclasses.asdict(params.workload))},
        },
    }


def job_run_config(job: str, params, root: str | None = None, tracking_uri: str = "",
                   loggers: bool = False) -> dict:
    """Returns the run config of one job: its ops' config from `params`, and the workload.

    With `root` the storage resource is pinned to it; without, the resource's default applies
    (GRASP_ROOT, else `.grasp/storage`, as the code location sees it).
    """
    if job not in JOB_ASSETS:
        raise ValueError(f"unknown job {job!r}; choose one of {sorted(JOB_ASSETS)}")
    full = run_config_for(params, root or "", tracking_uri)
    config = {"ops": {k: v for k, v in full["ops"].items() if k in JOB_ASSETS[job]}, "resources": {}}
    if set(JOB_ASSETS[job]) - WITHOUT_WORKLOAD:  # (Dagster ignores resource config a job does not use)
        config["resources"]["workload"] = full["resources"]["workload"]
    if root is not None:
        config["resources"]["storage"] = full["resources"]["storage"]
    if not config["resources"]:
        del config["resources"]
    if loggers:
        config["loggers"] = full["loggers"]
    return config

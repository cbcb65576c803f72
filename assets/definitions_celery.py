"""Deployment profile `celery`: the same code location, steps executed by Celery workers.

Every step of every job is sent to a Celery queue (broker: Redis) and executed by whichever
`dagster-celery` worker takes it, on any machine that has this package, the same
DAGSTER_HOME instance settings and the storage environment. Every run config names the
broker (`execution: {config: {broker: redis://HOST:6379/0, backend: redis://HOST:6379/0}}`,
see `celery_run_config`), and workers are started with the same block (deploy/celery.yaml):

    dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -n worker1 -- --pool=solo
    dagster job execute -m assets.definitions_celery -j grasp_prepare -c run_config.yaml

The module-level functions below make each job reconstructable by name in worker processes.
"""

import dagster as dg
from dagster_celery import celery_executor

from .definitions import build_definitions

defs = build_definitions(executor=celery_executor)


def celery_run_config(broker: str, backend: str | None = None) -> dict:
    """The `execution` block selecting this profile's broker (merge it into a run config)."""
    return {"execution": {"config": {"broker": broker, "backend": backend or broker}}}


def grasp_prepare() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_prepare")


def grasp_sketch() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_sketch")


def grasp_retrain() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_retrain")


def grasp_fit_and_curate() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_fit_and_curate")

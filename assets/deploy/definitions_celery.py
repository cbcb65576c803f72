"""Deployment profile `celery`: the same code location, steps executed by Celery workers.

Every step of every job is sent to a Celery queue (broker: Redis) and executed by whichever
`dagster-celery` worker takes it, on any machine that has this package, the same
DAGSTER_HOME instance settings and the storage environment. Every run config names the
broker by an environment variable (`execution: {config: {broker: {env: GRASP_CELERY_BROKER}}}`,
see `celery_run_config`: the URL and its password stay out of stored run config), and workers
are started with the same block (deploy/celery.yaml):

    dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -n worker1 -- --pool=solo
    dagster job execute -m assets.deploy.definitions_celery -j grasp_prepare -c run_config.yaml

The module-level functions below make each job reconstructable by name in worker processes.
"""

import dagster as dg
from dagster_celery import celery_executor

from ..definitions import build_definitions

defs = build_definitions(executor=celery_executor)


BROKER_ENV = "GRASP_CELERY_BROKER"


def celery_run_config(broker_env: str = BROKER_ENV) -> dict:
    """The `execution` block naming the variable that holds the broker (and result backend) URL;
    merge it into a run config. Runs and workers read the URL from their own environment."""
    return {"execution": {"config": {"broker": {"env": broker_env}, "backend": {"env": broker_env}}}}


def grasp_prepare() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_prepare")


def grasp_sketch() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_sketch")


def grasp_retrain() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_retrain")


def grasp_fit_and_curate() -> dg.JobDefinition:
    return defs.resolve_job_def("grasp_fit_and_curate")

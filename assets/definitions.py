"""The code location: every asset, check, resource, job, schedule and sensor of the GRASP pipeline.

Run config defaults are the `demo` profile: every asset's launchpad config has the library
dataclasses' defaults, which are that profile. `grasp config --profile smoke --job NAME`
prints the smoke profile's run config to paste into the launchpad. (Jobs take no `config=`
preset: a job-level default config breaks materialising a subset of the job's assets.)
Jobs that train torch models carry the run tag grasp/torch=true, which deploy/dagster.yaml
limits to one queued run at a time.
"""

import dagster as dg

from . import checks, corpus, curation, mixture, model, retraining, sketches, surrogates
from .cli import REFRESH_SKETCHES_AND_SURROGATE
from .jobs import all_jobs
from .resources import GraspStorage, WorkloadResource
from .schedules import build_schedules
from .sensors import build_sensors

TORCH_TAG = {"grasp/torch": "true"}
TORCH_JOBS = {"grasp_prepare", "grasp_sketch", "grasp_retrain", "grasp_fit_and_curate",
              "grasp_refresh_sketches_and_surrogate"}

all_assets = dg.load_assets_from_modules([corpus, model, sketches, retraining, surrogates, curation, mixture])

refresh_job = dg.define_asset_job(
    "grasp_refresh_sketches_and_surrogate", selection=REFRESH_SKETCHES_AND_SURROGATE,
    description="Reference model, gradient and task sketches, surrogates (after a sketch or model setting "
                "changed; the retraining outcomes do not depend on them). Launch it over all corpus_shards "
                "partitions (one run). Then run grasp_fit_and_curate or "
                "grasp_reoptimise_mixture for what they mark stale.")


def with_torch_tag(job):
    """The job, tagged grasp/torch=true (a run tag too) where it trains torch models."""
    if job.name not in TORCH_JOBS:
        return job
    return dg.define_asset_job(
        job.name, selection=job.selection, config=job.config, description=job.description,
        tags={**(job.tags or {}), **TORCH_TAG}, run_tags=job.run_tags, metadata=job.metadata,
        partitions_def=job.partitions_def, executor_def=job.executor_def, hooks=job.hooks,
        op_retry_policy=job.op_retry_policy)


jobs = {job.name: with_torch_tag(job) for job in [*all_jobs, refresh_job]}


def build_definitions(executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The code location; `executor` (default: Dagster's multiprocess executor) is what a
    deployment profile changes (assets.definitions_celery, deploy/k8s)."""
    return dg.Definitions(
        assets=all_assets,
        asset_checks=checks.all_checks,
        jobs=list(jobs.values()),
        schedules=build_schedules(jobs["grasp_reoptimise_mixture"]),
        sensors=build_sensors(jobs["grasp_prepare"], jobs["grasp_sketch"], jobs["grasp_retrain"],
                              jobs["grasp_fit_and_curate"]),
        resources={"storage": GraspStorage(), "workload": WorkloadResource()},
        executor=executor,
    )


defs = build_definitions()

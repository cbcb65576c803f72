"""Sensors: new corpus files bring the pipeline up to date, one job after the other.

`grasp_new_corpus_files` watches a folder (GRASP_WATCH_DIR, default `.grasp/incoming`) for
corpus files (.jsonl, .jsonl.gz, .json, .parquet). Its cursor is the sorted list of
(file, mtime, size) it last saw; when that changes it requests `grasp_prepare` on the whole
folder as the corpus, which rewrites the pool and its shards, retrains θ₀, re-plans, and
registers the pool's shards and the plan's retraining batches as partitions. Three run-status
sensors continue the chain: `grasp_sketch_after_prepare` requests `grasp_sketch` over every
shard (one run, a partition range), `grasp_retrain_after_sketch` then `grasp_retrain` over
every batch, and `grasp_fit_and_curate_after_retrain` then `grasp_fit_and_curate` (task
sketches, surrogates, selection, mixture). The followers only continue runs tagged `grasp/chain=true` (the watcher sets it;
add it in the launchpad to have a manual `grasp_prepare` continued), so `grasp run` and
hand-launched runs are left alone.

Every sensor is off by default (turn them on in the UI under Automation, or with
`dagster sensor start`): a sensor that starts retraining as soon as the UI opens would be a
surprise. Parameters come from GRASP_PROFILE (default `demo`) and GRASP_CONFIG (an optional
JSON/TOML override file, as `grasp run --config`), the storage root from GRASP_ROOT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from grasp_pipeline.corpus import SUPPORTED_SUFFIXES

from . import env
from .jobs import fit_and_curate_job, job_range_tags, prepare_job, retrain_job, sketch_job
from .run_config import job_run_config

CHAIN_TAG = "grasp/chain"


def scan_corpus_files(folder: Path) -> list[list]:
    """Sorted [relative path, mtime in ns, size] of every corpus file under `folder`.

    Hidden files and folders (a writer's temporary `.name`) are skipped, so a file is seen
    once it has been renamed into place.
    """
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.name.endswith(SUPPORTED_SUFFIXES):
            stat = path.stat()
            found.append([relative.as_posix(), stat.st_mtime_ns, stat.st_size])
    return sorted(found)


def _chain_tags(trigger: str) -> dict[str, str]:
    return {CHAIN_TAG: "true", "grasp/profile": env.profile(), "grasp/trigger": trigger}


def _storage_of(run: dg.DagsterRun) -> str:
    """The storage root the triggering run used, so the whole chain writes to one root."""
    configured = (run.run_config or {}).get("resources", {}).get("storage", {}).get("config", {}).get("root")
    return configured or env.storage_root()


def build_sensors() -> list:
    """The watcher and its three followers."""

    @dg.sensor(name="grasp_new_corpus_files", job=prepare_job, default_status=dg.DefaultSensorStatus.STOPPED,
               minimum_interval_seconds=env.watch_interval(),
               description="New or changed corpus files in GRASP_WATCH_DIR (default .grasp/incoming) → "
                           "grasp_prepare on that folder; the followers then retrain and refit.")
    def new_corpus_files(context: dg.SensorEvaluationContext):
        folder = env.watch_dir()
        files = scan_corpus_files(folder)
        if not files:
            return dg.SkipReason(f"no corpus files (*{', *'.join(SUPPORTED_SUFFIXES)}) in {folder}")
        state = json.dumps(files)
        if context.cursor == state:
            return dg.SkipReason(f"no new or changed corpus files in {folder} ({len(files)} seen)")
        seen = {tuple(f) for f in json.loads(context.cursor)} if context.cursor else set()
        changed = [f[0] for f in files if tuple(f) not in seen]
        removed = len({f[0] for f in seen} - {f[0] for f in files})
        trigger = f"{len(changed)} new or changed, {removed} removed corpus file(s) in {folder}"
        context.log.info(f"{trigger}: {changed[:10]}")
        request = dg.RunRequest(
            run_key="corpus-" + hashlib.sha1(state.encode()).hexdigest()[:16],
            run_config=job_run_config(prepare_job.name, env.pipeline_params(str(folder)), env.storage_root()),
            tags=_chain_tags(trigger))
        return dg.SensorResult(run_requests=[request], cursor=state)

    followers = [follower(prepare_job, sketch_job, "every corpus shard"),
                 follower(sketch_job, retrain_job, "every retraining batch"),
                 follower(retrain_job, fit_and_curate_job, "task sketches, surrogates, selection and mixture")]
    return [new_corpus_files, *followers]


def follower(monitored_job, request_job, what: str):
    """A run-status sensor: after a chained `monitored_job` run succeeds, request `request_job`
    (over all of its registered partitions, one run, when it is partitioned)."""

    @dg.run_status_sensor(name=f"{request_job.name}_after_{monitored_job.name.removeprefix('grasp_')}",
                          run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[monitored_job],
                          request_job=request_job, default_status=dg.DefaultSensorStatus.STOPPED,
                          minimum_interval_seconds=15,
                          description=f"After a chained {monitored_job.name}: {request_job.name} ({what}).")
    def follow(context: dg.RunStatusSensorContext):
        run = context.dagster_run
        if run.tags.get(CHAIN_TAG) != "true":
            return dg.SkipReason(f"run {run.run_id} is not tagged {CHAIN_TAG}=true")
        try:
            partition_tags = job_range_tags(context.instance, request_job.name)
        except ValueError as error:
            return dg.SkipReason(str(error))
        return dg.RunRequest(
            run_key=f"{run.run_id}:{request_job.name}",
            run_config=job_run_config(request_job.name, env.pipeline_params(), _storage_of(run)),
            tags={**_chain_tags(f"{monitored_job.name} run {run.run_id} succeeded"), **partition_tags})

    return follow

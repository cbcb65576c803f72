"""Sensors: new corpus files start the pipeline; declarative automation brings the rest up to date.

`grasp_new_corpus_files` watches a folder (GRASP_WATCH_DIR, default `.grasp/incoming`) for
corpus files (.jsonl, .jsonl.gz, .json, .parquet). Its cursor is the sorted list of
(file, mtime, size) it last saw; when that changes it requests `grasp_prepare` on the whole
folder as the corpus, which rewrites the pool and its shards, retrains θ₀, re-plans, and
registers the pool's shards and the plan's retraining batches as partitions. It stays a
sensor because no automation condition observes files outside Dagster: the corpus folder is
the one input that is not an asset, and the run it requests needs the folder as run config.

Everything downstream of the corpus is automated declaratively: every such asset carries
`AutomationCondition.eager()` (assets/catalog.py), and the `grasp_automation` sensor
evaluates those conditions. After the prepare run it requests every shard of
gradient_sketches and every batch of subset_outcomes (new partitions are missing, their
inputs changed), then task sketches, surrogates, selection, mixture, validation and export
once their inputs are up to date; the requests become one backfill in dependency order.
Automated runs use the launchpad defaults, i.e. GRASP_PROFILE / GRASP_CONFIG as the code
location loaded them (assets/config.py), and the storage root of GRASP_ROOT.

Both sensors are off by default (turn them on in the UI under Automation, or with
`dagster sensor start`): a sensor that starts retraining as soon as the UI opens would be a
surprise. With `grasp_automation` on, any new table version, from `grasp run`, the
launchpad or `grasp select`, brings the assets downstream of it up to date.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from grasp_pipeline.corpus import SUPPORTED_SUFFIXES

from . import env
from .jobs import TORCH_TAG, prepare_job
from .run_config import job_run_config


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


def build_sensors() -> list:
    """The corpus-folder watcher and the automation-condition sensor."""

    @dg.sensor(name="grasp_new_corpus_files", job=prepare_job, default_status=dg.DefaultSensorStatus.STOPPED,
               minimum_interval_seconds=env.watch_interval(),
               description="New or changed corpus files in GRASP_WATCH_DIR (default .grasp/incoming) → "
                           "grasp_prepare on that folder; grasp_automation then brings the rest up to date.")
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
            tags={"grasp/profile": env.profile(), "grasp/trigger": trigger})
        return dg.SensorResult(run_requests=[request], cursor=state)

    automation = dg.AutomationConditionSensorDefinition(
        "grasp_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=30, run_tags={**TORCH_TAG, "grasp/trigger": "automation"},
        description="Evaluates every asset's automation condition (eager: up to date with its inputs); "
                    "after grasp_prepare it sketches every shard, retrains every batch, then fits, curates, "
                    "validates and exports.")
    return [new_corpus_files, automation]

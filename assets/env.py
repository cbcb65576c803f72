"""Every GRASP_* environment variable the Dagster layer reads, in one place.

| variable | meaning | default |
|---|---|---|
| GRASP_ROOT | storage root of the Delta tables (folder or object-store URI; read when a run starts) | .grasp/storage |
| GRASP_PROFILE | parameters of automated runs and the launchpad's defaults (read at code load) | demo |
| GRASP_CONFIG | optional JSON/TOML override file, likewise | (none) |
| GRASP_WATCH_DIR | folder the new-corpus sensor watches | .grasp/incoming |
| GRASP_WATCH_INTERVAL | seconds between the sensor's looks | 60 |
| GRASP_MIXTURE_CRON | cron of the mixture schedule | 0 3 * * * |
| GRASP_TIMEZONE | timezone of that cron | UTC |
| GRASP_LEASE_WAIT | seconds a Dagster step waits for another writer of the root | 600 |
| GRASP_LEASE_TTL | seconds a writer lease lives without renewal | 60 |
| GRASP_ALLOW_UNSAFE_STORAGE | true accepts AWS_S3_ALLOW_UNSAFE_RENAME in the environment | (refused) |
| GRASP_CELERY_BROKER | Celery broker URL (with its credentials; never in run config) | redis://127.0.0.1:6379/0 |
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = ".grasp/storage"
DEFAULT_MIXTURE_CRON = "0 3 * * *"


def storage_root(value: str | None = None) -> str:
    """The storage root: `value`, else GRASP_ROOT, else .grasp/storage; local paths made absolute."""
    root = value or os.environ.get("GRASP_ROOT", DEFAULT_ROOT)
    return root if "://" in root else str(Path(root).expanduser().resolve())


def profile() -> str:
    return os.environ.get("GRASP_PROFILE", "demo")


def config_file() -> str | None:
    return os.environ.get("GRASP_CONFIG") or None


def pipeline_params(corpus_path: str | None = None):
    """The parameters automated runs use: GRASP_PROFILE, then GRASP_CONFIG's overrides."""
    from grasp_pipeline.config import load_params, with_overrides

    params = load_params(profile(), config_file())
    if corpus_path is not None:
        params = with_overrides(params, {"corpus": {"corpus_path": corpus_path}})
    return params


def watch_dir() -> Path:
    return Path(os.environ.get("GRASP_WATCH_DIR", ".grasp/incoming")).expanduser().resolve()


def watch_interval() -> int:
    return int(os.environ.get("GRASP_WATCH_INTERVAL", "60"))


def mixture_cron() -> str:
    """The mixture schedule's cron (GRASP_MIXTURE_CRON), checked to be a cron expression."""
    import dagster as dg

    cron = os.environ.get("GRASP_MIXTURE_CRON", DEFAULT_MIXTURE_CRON).strip()
    try:  # Dagster's own check, through its public API: a schedule refuses an invalid cron
        dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except dg.DagsterInvalidDefinitionError:
        raise ValueError(f"GRASP_MIXTURE_CRON={cron!r} is not a cron expression (e.g. {DEFAULT_MIXTURE_CRON!r})") \
            from None
    return cron


def timezone() -> str:
    return os.environ.get("GRASP_TIMEZONE", "UTC")

"""Schedule: re-optimise the domain mixture from the current surrogate, off by default.

The cron comes from GRASP_MIXTURE_CRON (default "0 3 * * *", every day at 03:00) in
GRASP_TIMEZONE (default UTC), read when the code location loads. Parameters come from
GRASP_PROFILE / GRASP_CONFIG at each tick (see assets/sensors.py). Turn it on in the UI
(Automation → grasp_reoptimise_mixture_schedule) or with `dagster schedule start`.
"""

from __future__ import annotations

import os

import dagster as dg

DEFAULT_MIXTURE_CRON = "0 3 * * *"


def mixture_cron() -> str:
    from dagster._utils.schedules import is_valid_cron_string

    cron = os.environ.get("GRASP_MIXTURE_CRON", DEFAULT_MIXTURE_CRON).strip()
    if not is_valid_cron_string(cron):
        raise ValueError(f"GRASP_MIXTURE_CRON={cron!r} is not a cron expression (e.g. {DEFAULT_MIXTURE_CRON!r})")
    return cron


def build_schedules(mixture_job) -> list:
    from .cli import job_run_config
    from .sensors import pipeline_params, profile, storage_root

    @dg.schedule(name="grasp_reoptimise_mixture_schedule", job=mixture_job, cron_schedule=mixture_cron(),
                 execution_timezone=os.environ.get("GRASP_TIMEZONE", "UTC"),
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Re-optimises mixture_weights from the current surrogate (cron: GRASP_MIXTURE_CRON).")
    def reoptimise_mixture(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_config=job_run_config(mixture_job.name, pipeline_params(), storage_root()),
                             tags={"grasp/profile": profile(), "grasp/trigger": "schedule"})

    return [reoptimise_mixture]

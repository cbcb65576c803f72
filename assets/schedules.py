"""Schedule: re-optimise the domain mixture from the current surrogate, off by default.

The cron comes from GRASP_MIXTURE_CRON (default "0 3 * * *", every day at 03:00) in
GRASP_TIMEZONE (default UTC), read when the code location loads. Parameters come from
GRASP_PROFILE / GRASP_CONFIG at each tick (assets/env.py). Turn it on in the UI
(Automation → grasp_reoptimise_mixture_schedule) or with `dagster schedule start`.
"""

from __future__ import annotations

import dagster as dg

from . import env
from .jobs import mixture_job
from .run_config import job_run_config


def build_schedules() -> list[dg.ScheduleDefinition]:
    """The mixture schedule, with the cron and timezone of the environment at load time."""

    @dg.schedule(name="grasp_reoptimise_mixture_schedule", job=mixture_job, cron_schedule=env.mixture_cron(),
                 execution_timezone=env.timezone(), default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Re-optimises mixture_weights from the current surrogate (cron: GRASP_MIXTURE_CRON).")
    def reoptimise_mixture(context: dg.ScheduleEvaluationContext):
        return dg.RunRequest(run_config=job_run_config(mixture_job.name, env.pipeline_params(), env.storage_root()),
                             tags={"grasp/profile": env.profile(), "grasp/trigger": "schedule"})

    return [reoptimise_mixture]

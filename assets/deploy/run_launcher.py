"""The local run launcher, with a health check the run-monitoring daemon can use.

Dagster's DefaultRunLauncher starts each run worker as a process on this machine but cannot
tell the monitoring daemon whether that process is still alive, so a run worker killed by
the OOM killer or a SIGKILL stays STARTED forever and keeps its `torch` pool slot and its
place in the run queue. `MonitoredRunLauncher` answers the daemon's question: the worker's
pid is in the run's "Started process for run (pid: N)" engine event; the run is alive while
a process with that pid exists and started no later than that event (so a reused pid does
not count). deploy/dagster.yaml selects it, turns run monitoring on (a dead run is marked
FAILED, then its pool slots are freed) and retries runs that crashed, not runs whose steps
failed. One machine only: the daemon must see the run workers' processes.
"""

from __future__ import annotations

import re

import dagster as dg

# The health-check result types have no public export; a launcher that implements the
# (public) check_run_worker_health hook has to name them.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

from grasp_pipeline.infra.processes import process_exists, process_started_at

_PID = re.compile(r"Started process for run \(pid: (\d+)\)")


class MonitoredRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher whose run workers' liveness the monitoring daemon can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        started = self._worker_start(run)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker has not reported its pid yet")
        pid, reported_at = started
        if process_alive_since(pid, reported_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, f"the run worker (pid {pid}) is gone: it crashed or was "
                                                         "killed, so the run cannot finish")

    def _worker_start(self, run: dg.DagsterRun) -> tuple[int, float] | None:
        """(pid, time it was reported) of the run's worker process, from its engine events."""
        for record in reversed(self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
            found = _PID.search(record.message or "")
            if found:
                return int(found.group(1)), record.timestamp
        return None


def process_alive_since(pid: int, reported_at: float, slack_seconds: float = 5.0) -> bool:
    """Whether a process with `pid` exists and was started before `reported_at` (+ slack)."""
    if not process_exists(pid):
        return False
    started = process_started_at(pid)
    return started is None or started <= reported_at + slack_seconds

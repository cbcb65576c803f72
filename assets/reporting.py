"""Where the library's progress events go inside a Dagster step: the run's log and MLflow.

`DagsterLog` writes `context.log` lines, rate-limited: every task start and finish of a
stage's outer loops (shards, batches, rounds, candidates) and at most one progress line per
`interval` seconds in between, so a run's log shows a stage moving without one line per
step. `MlflowCurves` turns event metrics (the reference model's `train_loss` per step, the
protection rounds' `tasks_short`) into MLflow metric histories, sent in batches. MLflow being
down never stops a stage: a batch that fails (after the tracking policy's retries) is kept,
no more are tried while the stage runs, and the final `flush()` sends them or raises.
"""

from __future__ import annotations

import time

from grasp_pipeline.infra.progress import ProgressEvent
from grasp_pipeline.infra.tracking import TrackedRun, TrackingError

# tasks at this depth or shallower get start and finish lines (0 = the stage, 1 = its loops)
OUTLINE_DEPTH = 1


class DagsterLog:
    """A progress callback writing rate-limited `context.log.info` lines."""

    def __init__(self, log, interval: float = 5.0, clock=time.monotonic):
        self.log, self.interval, self.clock = log, interval, clock
        self.last = -float("inf")

    def __call__(self, event: ProgressEvent) -> None:
        outline = event.depth <= OUTLINE_DEPTH and (event.finished or event.done == 0)
        now = self.clock()
        if outline or (not event.finished and now - self.last >= self.interval):
            self.last = now
            self.log.info(event.describe())


class MlflowCurves:
    """A progress callback collecting event metrics as (key, value, step) points for one MLflow run.

    Points are sent with `log_batch` when `batch` have gathered or `interval` seconds passed,
    and by `flush()` (call it before the run ends).
    """

    def __init__(self, run: TrackedRun, batch: int = 500, interval: float = 10.0, clock=time.monotonic):
        self.run, self.batch, self.interval, self.clock = run, batch, interval, clock
        self.points: list[tuple[str, float, int]] = []
        self.sent = clock()
        self.deferred = False  # a batch failed: the rest wait for the final flush

    def __call__(self, event: ProgressEvent) -> None:
        if not event.metrics:
            return
        self.points += [(key, value, event.done) for key, value in event.metrics.items()]
        if not self.deferred and (len(self.points) >= self.batch or self.clock() - self.sent >= self.interval):
            try:
                self.flush()
            except TrackingError:
                self.deferred = True

    def flush(self) -> None:
        """Sends the points gathered so far (TrackingError when MLflow stays down; they are kept)."""
        if self.points:
            self.run.log_metric_points(self.points)
            self.points = []
        self.sent = self.clock()

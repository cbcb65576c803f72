"""MLflow tracking: one MLflow run per materialisation, in a tracking server or a store under
the storage root.

Uses `MlflowClient` with an explicit run id rather than MLflow's global "active run", so
concurrent steps in one process never log into each other's runs. Parameters, metrics and
tags go in batches (`log_batch`, chunked to MLflow's per-request limits), so a stage costs a
few requests instead of one per value; every Delta table version a stage read is an
`mlflow.data` input of its run (a `DeltaDatasetSource` naming the table URI and version);
a run can be nested under a parent (`grasp run` groups its stage runs under one), and can
sample system metrics (CPU, memory, GPU) while it is open.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

EXPERIMENT = "grasp-pipeline"
# MLflow's per-request limits of log_batch (mlflow.utils.validation): entities per request, params/tags per request
BATCH_ENTITIES = 1000
BATCH_PARAMS_OR_TAGS = 100
# MLflow's tag that nests a run under another (what the MLflow UI groups by)
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow's own switch for system metrics (CPU, memory, disk, network, GPU), honoured here too
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


def default_tracking_uri(storage_root: str) -> str:
    """Returns a SQLite tracking store inside a local storage root."""
    return f"sqlite:///{Path(storage_root).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str, storage_root: str, environ=os.environ) -> str:
    """The tracking URI to use: the configured one, else $MLFLOW_TRACKING_URI, else SQLite under a
    local root. An object-store root has no local folder for SQLite: it needs a tracking server."""
    uri = configured or environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    if "://" in storage_root:
        raise ValueError(f"the storage root {storage_root} is an object store, where MLflow cannot keep a SQLite "
                         "store: set the storage resource's tracking_uri (or MLFLOW_TRACKING_URI) to an MLflow "
                         "tracking server, e.g. http://127.0.0.1:5000")
    return default_tracking_uri(storage_root)


class TrackedRun:
    """Logs to one MLflow run; values that are not finite numbers are skipped, not fatal."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id
        self.failed = False

    def mark_failed(self) -> None:
        """Ends the run FAILED although its block returns normally (e.g. a child run failed)."""
        self.failed = True

    def log_params(self, params: dict) -> None:
        self.log_batch(params=[Param(k, str(v)[:6000]) for k, v in _flatten(params).items()])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        now = _now_ms()
        self.log_batch(metrics=[Metric(k, float(v), now, step) for k, v in _flatten(metrics).items()
                                if _finite_number(v)])

    def log_metric_points(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Logs (key, value, step) points, e.g. a training-loss curve, in as few requests as possible."""
        now = _now_ms()
        self.log_batch(metrics=[Metric(k, float(v), now, int(step)) for k, v, step in points if _finite_number(v)])

    def set_tags(self, tags: dict) -> None:
        self.log_batch(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_batch(self, metrics: list[Metric] = (), params: list[Param] = (), tags: list[RunTag] = ()) -> None:
        """Sends metrics, params and tags with `log_batch`, split to MLflow's per-request limits."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            chunk_params, params = params[:BATCH_PARAMS_OR_TAGS], params[BATCH_PARAMS_OR_TAGS:]
            chunk_tags, tags = tags[:BATCH_PARAMS_OR_TAGS], tags[BATCH_PARAMS_OR_TAGS:]
            room = BATCH_ENTITIES - len(chunk_params) - len(chunk_tags)
            chunk_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(self.run_id, metrics=chunk_metrics, params=chunk_params, tags=chunk_tags)

    def log_table_inputs(self, reads: dict[str, int], uri_of, context: str = "read") -> None:
        """Records every (table, Delta version) read as an `mlflow.data` input of the run.

        Each input is a dataset named like the table, whose source is a `DeltaDatasetSource`
        (the table's URI and version) and whose digest identifies that exact version.
        """
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        inputs = []
        for table, version in sorted(reads.items()):
            source = DeltaDatasetSource(path=uri_of(table), delta_table_version=int(version))
            digest = f"{table}@{version}"
            inputs.append(DatasetInput(Dataset(name=table, digest=digest, source_type=source._get_source_type(),
                                               source=source.to_json()),
                                       tags=[InputTag("mlflow.data.context", context)]))
        if inputs:
            self.client.log_inputs(self.run_id, datasets=inputs)

    def log_dict(self, payload: dict, file_name: str) -> None:
        self.client.log_dict(self.run_id, payload, file_name)

    def log_figure(self, figure, file_name: str) -> None:
        self.client.log_figure(self.run_id, figure, file_name)


class Tracker:
    """Creates MLflow runs in one experiment of one tracking store.

    `system_metrics` samples CPU, memory (and GPU, when present) into every run while it is
    open; None = MLflow's own switch, the MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING variable.
    """

    def __init__(self, tracking_uri: str, artifact_root: str | None = None, experiment: str = EXPERIMENT,
                 system_metrics: bool | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
        if system_metrics is None:
            system_metrics = os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower() in ("1", "true", "yes")
        self.system_metrics = system_metrics
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = Path(artifact_root).resolve().as_uri() if artifact_root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # another process created it first
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id

    @contextmanager
    def run(self, name: str, tags: dict | None = None, parent_run_id: str | None = None) -> Iterator[TrackedRun]:
        """Yields a TrackedRun (nested under `parent_run_id` when given); the MLflow run ends
        FINISHED, or FAILED if the body raised."""
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        tracked = TrackedRun(self.client, run.info.run_id)
        monitor = self._system_monitor(run.info.run_id)
        try:
            yield tracked
        except BaseException:
            self._stop(monitor)
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self._stop(monitor)
        status = RunStatus.FAILED if tracked.failed else RunStatus.FINISHED
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(status))

    def _system_monitor(self, run_id: str):
        """Starts MLflow's system-metrics sampler for the run (needs psutil); None when off."""
        if not self.system_metrics:
            return None
        # the sampler behind mlflow.start_run(log_system_metrics=True), without the global active run
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, tracking_uri=self.tracking_uri,
                                       sampling_interval=float(os.environ.get(
                                           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "10")))
        monitor.start()
        return monitor

    @staticmethod
    def _stop(monitor) -> None:
        if monitor is not None:
            monitor.finish()


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _finite_number(value) -> bool:
    """Numbers MLflow can store as metrics (bools count as 0/1; NaN and infinities are skipped)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def _now_ms() -> int:
    return int(time.time() * 1000)

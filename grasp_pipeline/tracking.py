"""MLflow tracking: one MLflow run per materialisation, in a tracking server or a store under
the storage root.

Uses `MlflowClient` with an explicit run id rather than MLflow's global "active run", so
concurrent steps in one process never log into each other's runs.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

EXPERIMENT = "grasp-pipeline"


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

    def log_params(self, params: dict) -> None:
        for key, value in _flatten(params).items():
            self.client.log_param(self.run_id, key, str(value)[:6000])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        for key, value in _flatten(metrics).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.client.log_metric(self.run_id, key, float(value), step=step)

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_dict(self, payload: dict, file_name: str) -> None:
        self.client.log_dict(self.run_id, payload, file_name)

    def log_figure(self, figure, file_name: str) -> None:
        self.client.log_figure(self.run_id, figure, file_name)


class Tracker:
    """Creates MLflow runs in one experiment of one tracking store."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None, experiment: str = EXPERIMENT):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)
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
    def run(self, name: str, tags: dict | None = None) -> Iterator[TrackedRun]:
        """Yields a TrackedRun; the MLflow run ends FINISHED, or FAILED if the body raised."""
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={k: str(v) for k, v in (tags or {}).items()})
        tracked = TrackedRun(self.client, run.info.run_id)
        try:
            yield tracked
        except BaseException:
            self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FINISHED))


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat

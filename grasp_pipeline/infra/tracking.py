"""MLflow tracking: one MLflow run per materialisation, in a tracking server or a store under
the storage root.

Uses `MlflowClient` with an explicit run id rather than MLflow's global "active run", so
concurrent steps in one process never log into each other's runs. Parameters, metrics and
tags go in batches (`log_batch`, chunked to MLflow's per-request limits), so a stage costs a
few requests instead of one per value; every Delta table version a stage read is an
`mlflow.data` input of its run (a `DeltaDatasetSource` naming the table URI and version);
a run can be nested under a parent (`grasp run` groups its stage runs under one), and can
sample system metrics (CPU, memory, GPU) while it is open.

Tracking never holds the data hostage and never lies about a run: every call is bounded
(`TrackingPolicy`: a few retries with backoff, a per-request timeout), a run whose body
raised ends FAILED, and a run whose process died (SIGKILL, a lost machine) is marked FAILED
by the next `Tracker` on that host (`mark_orphans_failed`), since it can no longer say so
itself. Values shown or stored are redacted (`secrets.redact`): no URI credentials.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from .processes import process_exists, process_start_ticks
from .secrets import redact, split_credentials

EXPERIMENT = "grasp-pipeline"
EXPERIMENT_ENV = "GRASP_MLFLOW_EXPERIMENT"  # the experiment's name when the storage resource names none
# MLflow 3 opens an experiment on its GenAI traces view unless this tag says it holds model training runs
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# MLflow's run tags for what ran and at which commit (the UI shows and links them)
SOURCE_NAME_TAG, GIT_COMMIT_TAG = "mlflow.source.name", "mlflow.source.git.commit"
OWNER_TAG = "grasp.owner"  # host:pid:process start time of the process that opened the run
FAILURE_TAG = "grasp.failure"
_OPEN_RUNS: set[str] = set()  # runs this process has open (so the sweep never touches them)
# MLflow's per-request limits of log_batch (mlflow.utils.validation): entities per request, params/tags per request
BATCH_ENTITIES = 1000
BATCH_PARAMS_OR_TAGS = 100
# MLflow's tag that nests a run under another (what the MLflow UI groups by)
PARENT_RUN_TAG = "mlflow.parentRunId"
# MLflow's own switch for system metrics (CPU, memory, disk, network, GPU), honoured here too
SYSTEM_METRICS_ENV = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"


class TrackingError(RuntimeError):
    """The MLflow tracking store failed after the bounded retries; the message says what was kept."""


@dataclass(frozen=True)
class TrackingPolicy:
    """How long tracking may take: per-request timeout (seconds) and attempts per call."""

    attempts: int = 3
    backoff_seconds: float = 0.5
    request_timeout_seconds: float = 10.0

    def apply_to_environment(self, environ=os.environ) -> None:
        """MLflow's HTTP client reads its retry and timeout settings from the environment: retries are
        ours (`call`), so MLflow's own are off unless a user set them; the timeout is bounded."""
        environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(self.request_timeout_seconds)))

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """Returns fn(*args, **kwargs), retried with backoff; TrackingError naming `what` after the last try."""
        for attempt in range(self.attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # connection refused, timeouts, 5xx, a locked SQLite store
                if attempt == self.attempts - 1:
                    reason = redact(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
                    raise TrackingError(f"MLflow {what} failed after {self.attempts} attempts: {reason}") from None
                time.sleep(self.backoff_seconds * 2 ** attempt)


def default_tracking_uri(storage_root: str) -> str:
    """Returns a SQLite tracking store inside a local storage root."""
    return f"sqlite:///{Path(storage_root).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str, storage_root: str, environ=os.environ) -> str:
    """The tracking URI to use: the configured one, else $MLFLOW_TRACKING_URI, else SQLite under a
    local root. An object-store root has no local folder for SQLite: it needs a tracking server.

    Credentials in the URI move to MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (which MLflow
    reads), so the returned URI, and everything it is shown or stored in, holds none."""
    uri = configured or environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        clean, user, password = split_credentials(uri)
        if user:
            environ["MLFLOW_TRACKING_USERNAME"] = user
        if password:
            environ["MLFLOW_TRACKING_PASSWORD"] = password
        return clean
    if "://" in storage_root:
        raise ValueError(f"the storage root {storage_root} is an object store, where MLflow cannot keep a SQLite "
                         "store: set the storage resource's tracking_uri (or MLFLOW_TRACKING_URI) to an MLflow "
                         "tracking server, e.g. http://127.0.0.1:5000")
    return default_tracking_uri(storage_root)


class TrackedRun:
    """Logs to one MLflow run; values that are not finite numbers are skipped, not fatal.

    Every call is bounded by the policy and raises TrackingError when the store stays down."""

    def __init__(self, client: MlflowClient, run_id: str, policy: TrackingPolicy = TrackingPolicy()):
        self.client, self.run_id, self.policy = client, run_id, policy
        self.failed = False

    def mark_failed(self) -> None:
        """Ends the run FAILED although its block returns normally (e.g. a child run failed)."""
        self.failed = True

    def log_params(self, params: dict) -> None:
        self.log_batch(params=[Param(k, redact(str(v))[:6000]) for k, v in _flatten(params).items()])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        now = _now_ms()
        self.log_batch(metrics=[Metric(k, float(v), now, step) for k, v in _flatten(metrics).items()
                                if _finite_number(v)])

    def log_metric_points(self, points: Iterable[tuple[str, float, int]]) -> None:
        """Logs (key, value, step) points, e.g. a training-loss curve, in as few requests as possible."""
        now = _now_ms()
        self.log_batch(metrics=[Metric(k, float(v), now, int(step)) for k, v, step in points if _finite_number(v)])

    def set_tags(self, tags: dict) -> None:
        self.log_batch(tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])

    def log_batch(self, metrics: list[Metric] = (), params: list[Param] = (), tags: list[RunTag] = ()) -> None:
        """Sends metrics, params and tags with `log_batch`, split to MLflow's per-request limits, each
        request bounded by the policy (TrackingError when the store stays down)."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            chunk_params, params = params[:BATCH_PARAMS_OR_TAGS], params[BATCH_PARAMS_OR_TAGS:]
            chunk_tags, tags = tags[:BATCH_PARAMS_OR_TAGS], tags[BATCH_PARAMS_OR_TAGS:]
            room = BATCH_ENTITIES - len(chunk_params) - len(chunk_tags)
            chunk_metrics, metrics = metrics[:room], metrics[room:]
            self.policy.call("log_batch", self.client.log_batch, self.run_id, metrics=chunk_metrics,
                             params=chunk_params, tags=chunk_tags)

    def log_table_inputs(self, reads: dict[str, int], uri_of, context: str = "read") -> None:
        """Records every (table, Delta version) read as an `mlflow.data` input of the run.

        Each input is a dataset named like the table, whose source is a `DeltaDatasetSource`
        (the table's URI and version) and whose digest identifies that exact version.
        """
        from mlflow.data.delta_dataset_source import DeltaDatasetSource

        inputs = []
        for table, version in sorted(reads.items()):
            source = DeltaDatasetSource(path=redact(uri_of(table)), delta_table_version=int(version))
            digest = f"{table}@{version}"
            inputs.append(DatasetInput(Dataset(name=table, digest=digest, source_type=source._get_source_type(),
                                               source=source.to_json()),
                                       tags=[InputTag("mlflow.data.context", context)]))
        if inputs:
            self.policy.call("log_inputs", self.client.log_inputs, self.run_id, datasets=inputs)

    def log_dict(self, payload: dict, file_name: str) -> None:
        self.policy.call("log_dict", self.client.log_dict, self.run_id, payload, file_name)

    def log_figure(self, figure, file_name: str) -> None:
        self.policy.call("log_figure", self.client.log_figure, self.run_id, figure, file_name)

    def log_text(self, text: str, file_name: str) -> None:
        self.policy.call("log_text", self.client.log_text, self.run_id, text, file_name)

    def log_table(self, frame, file_name: str) -> None:
        """Logs a polars frame as an MLflow table artifact (`file_name` ends in .json; the run's
        Artifacts and the experiment's evaluation view show it)."""
        columns = {name: frame[name].to_list() for name in frame.columns}
        self.policy.call("log_table", self.client.log_table, self.run_id, columns, file_name)


class Tracker:
    """Creates MLflow runs in one experiment of one tracking store.

    `system_metrics` samples CPU, memory (and GPU, when present) into every run while it is
    open; None = MLflow's own switch, the MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING variable.
    """

    def __init__(self, tracking_uri: str, artifact_root: str | None = None, experiment: str | None = None,
                 policy: TrackingPolicy = TrackingPolicy(), system_metrics: bool | None = None):
        policy.apply_to_environment()
        self.tracking_uri, self.policy = redact(tracking_uri), policy
        self._uri = tracking_uri  # for MLflow's own clients (the system-metrics sampler); never shown
        self.client = MlflowClient(tracking_uri=tracking_uri)
        if system_metrics is None:
            system_metrics = os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower() in ("1", "true", "yes")
        self.system_metrics = system_metrics
        experiment = experiment_name(experiment)
        found = policy.call("get_experiment_by_name", self.client.get_experiment_by_name, experiment)
        if found is None:
            location = Path(artifact_root).resolve().as_uri() if artifact_root else None
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # another process created it first
                self.experiment_id = policy.call("get_experiment_by_name", self.client.get_experiment_by_name,
                                                 experiment).experiment_id
        else:
            self.experiment_id = found.experiment_id
            relocate_artifacts(tracking_uri, found, artifact_root)
        if found is None or EXPERIMENT_KIND_TAG not in found.tags:  # an experiment made before the tag gets it
            policy.call("set_experiment_tag", self.client.set_experiment_tag, self.experiment_id,
                        EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        self.mark_orphans_failed()

    @contextmanager
    def run(self, name: str, tags: dict | None = None, parent_run_id: str | None = None,
            source: str | None = None) -> Iterator[TrackedRun]:
        """Yields a TrackedRun (nested under `parent_run_id` when given); the MLflow run ends FINISHED,
        or FAILED if the body raised or `mark_failed` was called (when the store is down too, the
        run stays RUNNING until the next Tracker marks it FAILED). `source` (default `name`) is the
        run's `mlflow.source.name`; in a git checkout the run also carries the commit."""
        tags = {**source_tags(source or name), **{k: redact(str(v)) for k, v in (tags or {}).items()},
                OWNER_TAG: process_owner()}
        if parent_run_id:
            tags[PARENT_RUN_TAG] = parent_run_id
        run = self.policy.call("create_run", self.client.create_run, self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        tracked = TrackedRun(self.client, run_id, self.policy)
        _OPEN_RUNS.add(run_id)
        monitor = self._system_monitor(run_id)
        try:
            yield tracked
        except BaseException as error:
            self._stop(monitor)
            self._end_failed(run_id, f"{type(error).__name__}: {error}")
            raise
        finally:
            _OPEN_RUNS.discard(run_id)
        self._stop(monitor)
        status = RunStatus.FAILED if tracked.failed else RunStatus.FINISHED
        self.policy.call("set_terminated", self.client.set_terminated, run_id, RunStatus.to_string(status))

    def _end_failed(self, run_id: str, failure: str) -> None:
        """Tags the run with its failure and ends it FAILED; a store that is down leaves it to the next Tracker."""
        try:
            self.policy.call("set_tag", self.client.set_tag, run_id, FAILURE_TAG, redact(failure)[:5000])
            self.policy.call("set_terminated", self.client.set_terminated, run_id,
                             RunStatus.to_string(RunStatus.FAILED))
        except TrackingError:
            pass  # the store is down: the next Tracker marks the run FAILED

    def _system_monitor(self, run_id: str):
        """Starts MLflow's system-metrics sampler for the run (needs psutil); None when off."""
        if not self.system_metrics:
            return None
        # the sampler behind mlflow.start_run(log_system_metrics=True), without the global active run
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, tracking_uri=self._uri,
                                       sampling_interval=float(os.environ.get(
                                           "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "10")))
        monitor.start()
        return monitor

    @staticmethod
    def _stop(monitor) -> None:
        if monitor is not None:
            monitor.finish()

    def mark_orphans_failed(self) -> list[str]:
        """Marks FAILED every RUNNING run of the experiment opened on this host by a process that has
        ended (or by this process, which no longer has it open); returns their run ids."""
        host = socket.gethostname()
        try:
            running = self.client.search_runs(
                [self.experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{OWNER_TAG}` LIKE "
                                                    f"'{host}:%'", max_results=1000)
        except Exception:  # a store that cannot search: nothing to reconcile now
            return []
        orphans = [r.info.run_id for r in running if not _owner_alive(r.data.tags.get(OWNER_TAG, ""), r.info.run_id)]
        for run_id in orphans:
            owner = next(r.data.tags.get(OWNER_TAG) for r in running if r.info.run_id == run_id)
            self.client.set_tag(run_id, FAILURE_TAG, f"its process ({owner}) ended without finishing the run")
            self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        return orphans


def experiment_name(configured: str | None = None, environ=os.environ) -> str:
    """The MLflow experiment: the configured name, else $GRASP_MLFLOW_EXPERIMENT, else `grasp-pipeline`."""
    return configured or environ.get(EXPERIMENT_ENV, "").strip() or EXPERIMENT


def source_tags(source: str) -> dict[str, str]:
    """`mlflow.source.name`, and `mlflow.source.git.commit` when this code is a git checkout."""
    commit = git_commit()
    return {SOURCE_NAME_TAG: source, **({GIT_COMMIT_TAG: commit} if commit else {})}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout holding this package, or None (an installed package, no git)."""
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) == 40 else None


def process_owner(pid: int | None = None) -> str:
    """host:pid:start time of a process (start time from /proc, so a reused pid is a different owner)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{process_start_ticks(pid)}"


def _owner_alive(owner: str, run_id: str) -> bool:
    parts = owner.split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return True  # not ours to judge
    pid = int(parts[1])
    if pid == os.getpid():
        return run_id in _OPEN_RUNS
    return process_exists(pid) and process_start_ticks(pid) == parts[2]


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


def relocate_artifacts(tracking_uri: str, experiment, artifact_root: str | None) -> bool:
    """Points a local SQLite store's experiment, and its runs' artifact URIs, at `artifact_root` when
    they name another folder; returns whether it did. A copied or moved storage root carries its
    mlflow.db with the absolute artifact location of the original, and MLflow would keep writing (and
    reading) the artifacts there: the first Tracker in the new place rewrites it (the copy holds the old
    artifacts too, under the same relative paths). Servers and remote artifact stores are left alone."""
    if not artifact_root or not tracking_uri.startswith("sqlite:///"):
        return False
    old, new = experiment.artifact_location, Path(artifact_root).resolve().as_uri()
    if old == new or not old.startswith("file:"):
        return False
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(tracking_uri.removeprefix("sqlite:///"))) as db, db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                   (new, int(experiment.experiment_id)))
        db.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? AND "
                   "substr(artifact_uri, 1, ?) = ?", (new, len(old) + 1, int(experiment.experiment_id), len(old), old))
    return True

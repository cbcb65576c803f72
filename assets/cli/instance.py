"""The Dagster instance of the command line, and work done outside a run told to it.

`ensure_dagster_home` gives DAGSTER_HOME (default `.grasp/dagster_home`) the local instance
settings and creates its storage once, under a file lock. `grasp select` / `grasp mixture` write
new table versions and `grasp export` new trainer files without a Dagster run; each reports an
AssetMaterialization (Delta version, rows, URI, lineage, and the data version, so assets
downstream turn stale) with `DagsterInstance.report_runless_asset_event`, so the UI shows them.
`grasp maintain` reports one AssetObservation per table (maintenance changes no rows).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
import time
from pathlib import Path

import dagster as dg

from grasp_pipeline.infra.lineage import LINEAGE_TABLE, lineage_summary
from grasp_pipeline.infra.processes import process_exists, process_start_ticks
from grasp_pipeline.infra.secrets import redact, redact_values
from grasp_pipeline.infra.storage import DeltaStore

# Dagster's tag for an asset event's data version (what staleness compares)
DATA_VERSION_TAG = "dagster/data_version"
# The local instance settings (sqlite storage, run queue, concurrency pools), copied into
# DAGSTER_HOME when it has none; the file is in the repository, next to this package.
DAGSTER_YAML_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml"


# Tags of the Dagster runs `grasp run` executes in its own process: which process runs them (pid and
# start time, since pids are reused), so a later `grasp run` can tell a crashed one from a live one.
OWNER_PID_TAG, OWNER_START_TAG = "grasp/pid", "grasp/pid_start"
_ACTIVE = (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED)


def owner_tags() -> dict[str, str]:
    """The tags naming this process as the owner of the runs it executes in process."""
    return {OWNER_PID_TAG: str(os.getpid()), OWNER_START_TAG: process_start_ticks(os.getpid())}


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Marks FAILED every in-process run whose `grasp run` process is gone and frees its pool slots.

    Run monitoring frees the slots of runs the daemon launched; a `grasp run` executes its runs in its
    own process, so after a `kill -9` its steps would hold the `torch` pool forever and the next run
    would wait without a word. Returns the ids of the runs released."""
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(_ACTIVE))):
        pid, started = run.tags.get(OWNER_PID_TAG), run.tags.get(OWNER_START_TAG)
        if pid is None or (process_exists(int(pid)) and process_start_ticks(int(pid)) == started):
            continue
        instance.report_run_failed(run, f"its grasp run process {pid} is gone (killed); released by a later "
                                        "grasp run, which also freed its concurrency pool slots")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


@contextlib.contextmanager
def reporting_waits(stream=None, interval: float = 1.0, after: float = 10.0):
    """While the block runs, says on `stream` (stderr) what a step of this process's runs waits for: a pool
    slot held by another run, once `after` seconds have passed (a blocked step only writes "Step blocked by
    limit for pool torch" to the event log, and the command looked hung). Each holder is named once.

    A blocked in-process step never looks at Ctrl-C (Dagster holds SIGINT until a check the in-process
    executor's waiting loop does not make), so a Ctrl-C that Dagster held while a step of ours waits is
    raised in the main thread as KeyboardInterrupt here."""
    from dagster._utils.interrupts import check_captured_interrupt

    stop, told, main = threading.Event(), set(), threading.main_thread().ident

    def watch():
        with dg.DagsterInstance.get() as instance:  # its own instance: the run's is busy in the main thread
            while not stop.wait(interval):
                lines, blocked = _waits(instance, after, told)
                for line in lines:
                    print(line, file=stream or sys.stderr, flush=True)
                if blocked and check_captured_interrupt():
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main),
                                                               ctypes.py_object(KeyboardInterrupt))
                    return

    watcher = threading.Thread(target=watch, name="grasp-waits", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()


def _waits(instance: dg.DagsterInstance, after: float, told: set) -> tuple[list[str], bool]:
    """(lines naming each pool slot holder that a step of this process's runs has waited on for `after` s
    and was not named yet, whether a step of this process's runs waits for a slot now)."""
    lines, now, ours, blocked = [], time.time(), str(os.getpid()), False
    storage = instance.event_log_storage
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        for step in info.pending_steps:
            run = instance.get_run_by_id(step.run_id)
            if step.assigned_timestamp is not None or run is None or run.tags.get(OWNER_PID_TAG) != ours:
                continue
            blocked = True
            if now - step.enqueued_timestamp.timestamp() < after:
                continue
            for slot in info.claimed_slots:
                if slot.run_id == step.run_id or (step.step_key, slot.run_id) in told:
                    continue
                told.add((step.step_key, slot.run_id))
                holder = instance.get_run_by_id(slot.run_id)
                who = (f"Dagster run {slot.run_id} ({holder.job_name}, {holder.status.value}, pid "
                       f"{holder.tags.get(OWNER_PID_TAG, 'unknown')})" if holder else f"Dagster run {slot.run_id}")
                lines.append(f"grasp run: step {step.step_key} is waiting for a `{pool}` pool slot (limit "
                             f"{info.slot_count}), held by {who} for its step {slot.step_key}; it starts when that "
                             "run ends (Ctrl-C stops this one; see the runs with `dagster dev`)")
    return lines, blocked


def ensure_dagster_home(home: str | os.PathLike | None = None) -> str:
    """Creates DAGSTER_HOME (default `.grasp/dagster_home`) and gives it `deploy/dagster.yaml`
    when it has no settings yet (an absent or empty dagster.yaml); returns its path."""
    if home is None:
        home = os.environ.setdefault("DAGSTER_HOME", str(Path(".grasp/dagster_home").resolve()))
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() or settings.stat().st_size == 0:
        if DAGSTER_YAML_TEMPLATE.exists():
            settings.write_text(DAGSTER_YAML_TEMPLATE.read_text())
        else:  # an installed (non-editable) package: an empty file = default local storage, no warning
            settings.touch()
    _create_instance_storage_once(home)
    return str(home)


def _create_instance_storage_once(home: Path) -> None:
    """Creates the instance's SQLite storage under a file lock: two `grasp` commands starting on a
    fresh DAGSTER_HOME would otherwise both create its schema and leave it unreadable."""
    import fcntl

    if (home / "history" / "runs.db").exists():
        return
    with open(home / ".grasp-init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "history" / "runs.db").exists():
            with dg.DagsterInstance.from_config(str(home)):
                pass


def report_to_instance(report) -> str:
    """Calls `report(instance)` (returning the asset names it reported) on the DAGSTER_HOME instance;
    returns what happened, in words. The tables are written whatever happens here, so an
    instance that cannot be opened is a note, not an error."""
    try:
        ensure_dagster_home()
        with dg.DagsterInstance.get() as instance:
            assets = report(instance)
        return f"reported to the Dagster instance at {os.environ['DAGSTER_HOME']}" + (
            f" ({', '.join(assets)})" if assets else "")
    except Exception as error:  # the UI's view is secondary to the tables
        return f"not reported to the Dagster instance ({type(error).__name__}: {error})"


def table_materialization(store: DeltaStore, write, command: str) -> dg.AssetMaterialization:
    """The materialisation of one table version written by `command` (a TableWrite)."""
    metadata = {f"{write.table}.delta_version": write.version, f"{write.table}.rows": write.rows,
                "dagster/row_count": write.rows, "dagster/uri": redact(store.uri(write.table)), "written_by": command}
    if store.exists(LINEAGE_TABLE):
        try:
            metadata["lineage"] = dg.MetadataValue.json(
                redact_values(lineage_summary(store, write.table, write.version)))
        except ValueError:  # nothing recorded for this version: the event still says what was written
            pass
    return dg.AssetMaterialization(asset_key=write.table, description=f"written by `{command}` (no Dagster run)",
                                   metadata=metadata, tags={DATA_VERSION_TAG: f"{write.table}@{write.version}"})


def report_writes(instance: dg.DagsterInstance, store: DeltaStore, writes, command: str) -> list[str]:
    """Reports every table version in `writes`, and the lineage table's new version; returns the tables."""
    events = [table_materialization(store, write, command) for write in writes]
    version = store.version(LINEAGE_TABLE)
    if writes and version is not None:
        events.append(dg.AssetMaterialization(asset_key=LINEAGE_TABLE, description=f"appended to by `{command}`",
                                              metadata={f"{LINEAGE_TABLE}.delta_version": version},
                                              tags={DATA_VERSION_TAG: f"{LINEAGE_TABLE}@{version}"}))
    for event in events:
        instance.report_runless_asset_event(event)
    return [event.asset_key.to_user_string() for event in events]


def report_export(instance: dg.DagsterInstance, destination: str, metrics: dict, reads: dict[str, int]) -> list[str]:
    """Reports a `grasp export` as a materialisation of the trainer_export asset."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key="trainer_export", description="written by `grasp export` (no Dagster run)",
        metadata={**{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
                  **{f"{t}.read_version": v for t, v in reads.items()}, "dagster/uri": destination},
        tags={DATA_VERSION_TAG: ",".join(f"{t}@{v}" for t, v in sorted(reads.items()))}))
    return ["trainer_export"]


def report_observations(instance: dg.DagsterInstance, observations: list[dg.AssetObservation]) -> list[str]:
    """Reports the observations; returns their assets."""
    for observation in observations:
        instance.report_runless_asset_event(observation)
    return [o.asset_key.to_user_string() for o in observations]

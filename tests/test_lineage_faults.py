"""A table version and its lineage cannot part, and no MLflow run is left RUNNING.

Faults injected right after a real Delta commit: the MLflow tracking server stops, or the
writing process is SIGKILLed. In both cases the committed version has its lineage (in the
commit), the step's outcome is told truthfully, and the MLflow run ends FAILED.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from grasp_pipeline.infra.lineage import LINEAGE_TABLE, lineage_of, provenance
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.infra.tracking import FAILURE_TAG, Tracker, default_tracking_uri

from .conftest import TINY, tiny_params
from .services import binary, free_port, start, stop

REPO = Path(__file__).resolve().parents[1]


def runs_by_status(uri: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("grasp-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    found: dict[str, list] = {}
    for run in runs:
        found.setdefault(run.info.status, []).append(run)
    return found


def mlflow_server(folder: Path, port: int):
    return start([binary("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                  "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                  "--artifacts-destination", str(folder / "artifacts")],
                 port, "mlflow server", folder / f"mlflow-{time.monotonic_ns()}.log",
                 env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def test_mlflow_failing_after_a_commit_keeps_the_lineage_and_the_run_ends_failed(tmp_path, monkeypatch):
    from assets.cli import error_chain

    folder, port = tmp_path / "mlflow", free_port()
    folder.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = mlflow_server(folder, port)
    original = DeltaStore._commit

    def commit_then_lose_mlflow(self, table, frame, lineage=None, **kwargs):
        version = original(self, table, frame, lineage, **kwargs)
        if table == "corpus_shards":
            stop(server)  # the tracking server goes away right after the data is committed
        return version

    monkeypatch.setattr(DeltaStore, "_commit", commit_then_lose_mlflow)
    root = tmp_path / "storage"
    params = tiny_params()
    with dg.instance_for_test() as instance:
        from assets.definitions import defs
        from assets.run_config import run_config_for

        config = run_config_for(params, str(root), uri)
        config["ops"] = {"corpus_shards": config["ops"]["corpus_shards"]}
        from assets.catalog import asset_keys

        job = defs.resolve_job_def("grasp_prepare").get_subset(  # the corpus stage: every table it writes
            asset_selection=set(asset_keys(["corpus_shards"])))
        began = time.monotonic()
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
        elapsed = time.monotonic() - began
    assert not result.success
    message = "\n".join(error_chain(e.event_specific_data.error) for e in result.all_events
                        if e.is_step_failure and e.event_specific_data is not None)
    assert ("corpus_shards: committed corpus_shards@0, task_sets@0, corpus_sources@0 (lineage in each commit; the "
            "data is kept), then MLflow logging failed") in message, message
    assert elapsed < 120, f"tracking retries must be bounded ({elapsed:.0f} s)"

    store = DeltaStore(str(root))
    record = lineage_of(store, "corpus_shards", 0)
    assert record["asset"] == "corpus_shards" and record["dagster_run_id"] == result.run_id
    assert provenance(store, "task_sets", 0)["chain"][0]["mlflow_run_id"] == record["mlflow_run_id"]

    restarted = mlflow_server(folder, port)
    try:
        assert [r.info.run_id for r in runs_by_status(uri)["RUNNING"]] == [record["mlflow_run_id"]]
        Tracker(uri)  # the next stage on this host reconciles: the run's owner no longer has it open
        found = runs_by_status(uri)
        assert "RUNNING" not in found
        (failed,) = found["FAILED"]
        assert failed.info.run_id == record["mlflow_run_id"]
        assert "ended without finishing" in failed.data.tags[FAILURE_TAG]
    finally:
        stop(restarted)


KILL_AFTER_COMMIT = """
import os, signal, sys
import dagster as dg
from grasp_pipeline.infra.storage import DeltaStore
from tests.conftest import materialize_prepare, tiny_params

original = DeltaStore._commit

def commit_then_die(self, table, frame, lineage=None, **kwargs):
    version = original(self, table, frame, lineage, **kwargs)
    if table == "corpus_shards":
        os.kill(os.getpid(), signal.SIGKILL)  # right after the commit: no index row, no MLflow end
    return version

DeltaStore._commit = commit_then_die
with dg.instance_for_test() as instance:
    materialize_prepare(sys.argv[1], tiny_params(), instance, ["corpus_shards"])
"""


def test_a_process_killed_right_after_a_commit_leaves_lineage_and_no_run_running(tmp_path):
    root = tmp_path / "storage"
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_COMMIT, str(root)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    store = DeltaStore(str(root))
    assert store.version("corpus_shards") == 0 and not store.exists("task_sets")
    assert not store.exists(LINEAGE_TABLE)  # the index row was never written ...
    record = lineage_of(store, "corpus_shards", 0)  # ... the lineage is in the commit itself
    assert record["asset"] == "corpus_shards" and record["dagster_run_id"] and record["mlflow_run_id"]
    assert record["params"]["pool_examples_per_domain"] == TINY["corpus"]["pool_examples_per_domain"]

    uri = default_tracking_uri(str(root))
    assert [r.info.run_id for r in runs_by_status(uri)["RUNNING"]] == [record["mlflow_run_id"]]
    Tracker(uri)  # the next stage's tracker on this host: the run's process is gone
    found = runs_by_status(uri)
    assert "RUNNING" not in found
    (failed,) = found["FAILED"]
    assert failed.info.run_id == record["mlflow_run_id"]
    assert failed.data.tags["dagster.run_id"] == record["dagster_run_id"]


def test_a_failed_grasp_run_says_which_tables_it_committed_and_that_the_rest_is_unchanged(tmp_path, monkeypatch,
                                                                                      capsys):
    from assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    # in range on their own; together the mixture stage refuses them, after everything upstream committed
    config = {**TINY, "mixture": {**TINY["mixture"], "max_repeats": 0.1}}
    path = tmp_path / "late_failure.json"
    path.write_text(json.dumps(config))
    root = tmp_path / "storage"
    assert main(["run", "--config", str(path), "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "step mixture_weights failed" in err and "SettingError: mixture.max_repeats = 0.1" in err, err
    store = DeltaStore(str(root))
    written = sorted(f"{t}@{store.version(t)}" for t in ("corpus_shards", "task_sets", "reference_models",
                                                         "gradient_sketches", "subset_plan", "subset_outcomes",
                                                         "task_sketches", "surrogates", "curated_selections"))
    listed = err.split("Committed before the failure, each with its lineage in the commit: ")[1].split(". Every")[0]
    assert set(written) <= set(listed.split(", ")), listed
    assert "Every other table is at its previous version" in err
    assert not store.exists("mixture_weights") and not store.exists("selection_validation")

"""Deployment profile `celery`: steps on two Celery worker processes through Redis, tables on
an S3-compatible server, MLflow on a tracking server, and the same tables as a local run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import torch
import yaml

from grasp_pipeline import stages
from grasp_pipeline.infra.storage import DeltaStore

from .conftest import tiny_params
from .services import binary, stop

REPO = Path(__file__).resolve().parents[1]


def start_worker(name: str, config: Path, env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "wb")
    return subprocess.Popen([binary("dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y", str(config),
                             "-n", name, "--", "--pool=solo", "--without-gossip", "--without-mingle"],
                            stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)


def wait_until_ready(workers: list[subprocess.Popen], logs: list[Path], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not all("ready." in log.read_text(errors="replace") for log in logs):
        for worker, log in zip(workers, logs):
            assert worker.poll() is None, f"celery worker exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, "celery workers did not become ready"
        time.sleep(0.5)


def celery_hosts_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it (from the run's engine events)."""
    hosts = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.is_engine_event and event.step_key:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:
                hosts[event.step_key] = worker.value
    return hosts


def sorted_frame(frame: pl.DataFrame, keys: list[str], columns: list[str]) -> pl.DataFrame:
    return frame.select(keys + columns).sort(keys)


def test_sketches_and_retraining_on_two_celery_workers_with_s3_tables_equal_a_local_run(
        redis_url, s3_root, mlflow_server, tmp_path, monkeypatch):
    from assets.deploy.definitions_celery import celery_run_config, grasp_prepare
    from assets.run_config import job_run_config

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("GRASP_CELERY_BROKER", redis_url)  # runs and workers read the broker from the environment
    execution = celery_run_config()
    config = tmp_path / "celery.yaml"
    config.write_text(yaml.safe_dump(execution))

    # workers get the storage and tracking settings from their environment, like on other machines
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # `celery`
    logs = [tmp_path / "worker1.log", tmp_path / "worker2.log"]
    with dg.DagsterInstance.get():  # create the instance's SQLite schema once, before workers open it
        pass
    workers = []
    try:
        for i, log in enumerate(logs):  # one after the other: concurrent first opens of SQLite can lock
            workers.append(start_worker(f"worker{i + 1}", config, env, log))
            wait_until_ready(workers, logs[:i + 1])
        params = tiny_params(workload={"torch_threads": 1})
        with dg.DagsterInstance.get() as instance:
            prepare = dg.execute_job(dg.reconstructable(grasp_prepare), instance=instance,
                                     run_config={**job_run_config("grasp_prepare", params, s3_root), **execution})
            assert prepare.success, prepare.all_events
            shards = instance.get_dynamic_partitions("corpus_shards")
            batches = instance.get_dynamic_partitions("retraining_batches")
            assert len(shards) >= 2 and len(batches) >= 2

            # launched the way an operator would, all in flight at once: the shards as two runs
            # over partition ranges, and one run per retraining batch
            def launch(job: str, tags: dict) -> subprocess.Popen:
                config_file = tmp_path / f"{job}.yaml"
                config_file.write_text(yaml.safe_dump({**job_run_config(job, params, s3_root), **execution}))
                return subprocess.Popen([binary("dagster"), "job", "execute", "-m", "assets.deploy.definitions_celery",
                                         "-j", job, "-c", str(config_file), "--tags", json.dumps(tags)],
                                        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

            halves = [shards[:len(shards) // 2], shards[len(shards) // 2:]]
            launches = [launch("grasp_sketch", {"dagster/asset_partition_range_start": half[0],
                                                "dagster/asset_partition_range_end": half[-1]}) for half in halves]
            launches += [launch("grasp_retrain", {"dagster/partition": batch}) for batch in batches]
            outputs = [process.communicate(timeout=400)[0].decode(errors="replace") for process in launches]
            assert all(process.returncode == 0 for process in launches), "\n".join(o[-3000:] for o in outputs)
            sketch_runs = instance.get_run_records(dg.RunsFilter(job_name="grasp_sketch"))
            assert len(sketch_runs) == 2 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS
                                                 for r in sketch_runs)
            results = instance.get_run_records(dg.RunsFilter(job_name="grasp_retrain"))
            assert sorted(r.dagster_run.tags["dagster/partition"] for r in results) == sorted(batches)
            assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in results)

            hosts = celery_hosts_of(instance, prepare.run_id)
            for record in [*sketch_runs, *results]:
                run_id = record.dagster_run.run_id
                hosts.update({f"{run_id}:{k}": v for k, v in celery_hosts_of(instance, run_id).items()})
    finally:
        for worker in workers:
            stop(worker)

    # every step ran on a Celery worker, and both workers took work
    assert {"corpus_shards", "reference_model", "subset_plan"} <= set(hosts)
    assert sum(1 for k in hosts if k.endswith(":gradient_sketches")) == 2
    assert sum(1 for k in hosts if k.endswith(":subset_outcomes")) == len(batches)
    assert {h.split("@")[0] for h in hosts.values()} == {"worker1", "worker2"}, hosts

    # the same pipeline run locally with the library stages
    local = DeltaStore(str(tmp_path / "local"))
    threads = torch.get_num_threads()
    try:
        workload = params.workload.build()  # one torch thread, as on the workers
        stages.run_corpus_shards(local, params.corpus, params.workload.example_bytes)
        stages.run_reference_model(local, workload, params.reference)
        stages.run_gradient_sketches(local, workload, params.sketch)
        stages.run_subset_plan(local, params.plan)
        stages.run_subset_outcomes(local, workload, params.retrain, batches=sorted(batches))
    finally:
        torch.set_num_threads(threads)

    remote = DeltaStore(s3_root)
    for table in ("corpus_shards", "subset_plan"):
        keys = ["example_id"] if table == "corpus_shards" else ["subset_id"]
        assert sorted_frame(remote.read(table), keys, [c for c in local.read(table).columns if c not in keys]).equals(
            sorted_frame(local.read(table), keys, [c for c in local.read(table).columns if c not in keys]))
    # floats: same code, same seeds, one torch thread in every process -> bit-identical
    sketch_cols = ["model_version", "sketch_config"]
    r, l_ = (sorted_frame(s.read("gradient_sketches"), ["example_id"], ["sketch", "loss", "grad_norm", *sketch_cols])
             for s in (remote, local))
    assert r["model_version"].equals(l_["model_version"]) and r["sketch_config"].equals(l_["sketch_config"])
    np.testing.assert_array_equal(np.asarray(r["sketch"].to_list()), np.asarray(l_["sketch"].to_list()))
    np.testing.assert_array_equal(r["loss"].to_numpy(), l_["loss"].to_numpy())
    keys = ["subset_id", "task", "repeat"]
    r, l_ = (sorted_frame(s.read("subset_outcomes"), keys, ["loss", "utility", "batch", "members_sha1"])
             for s in (remote, local))
    assert r.select(keys + ["batch", "members_sha1"]).equals(l_.select(keys + ["batch", "members_sha1"]))
    np.testing.assert_array_equal(r["loss"].to_numpy(), l_["loss"].to_numpy())

    # MLflow runs went to the tracking server, one per materialisation
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("grasp-pipeline")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`dagster.run_id` = '{prepare.run_id}'")
    assert sorted(run.data.tags["dagster.asset"] for run in runs) == sorted(
        ["corpus_shards", "reference_model", "subset_plan"])
    assert all(run.info.status == "FINISHED" for run in runs)
    retrain_runs = [client.search_runs([experiment.experiment_id],
                                       filter_string=f"tags.`dagster.run_id` = '{r.dagster_run.run_id}'")
                    for r in results]
    assert [len(found) for found in retrain_runs] == [1] * len(batches)

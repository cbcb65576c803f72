"""One writer per storage root: the lease (local disk and the S3-compatible server), two `grasp run`s
started at once, and credentials that never reach anything stored or shown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from grasp_pipeline.infra.lease import LeaseHeld, RootLease
from grasp_pipeline.infra.storage import DeltaStore, StorageSettingError, storage_options_from_env

from .conftest import TINY, materialize_prepare, spawn_pool, tiny_params, write_user_corpus
from .partition_writers import outcome_rows
from .services import binary, free_port, start, stop

REPO = Path(__file__).resolve().parents[1]


def test_a_second_writer_stops_naming_the_first(any_root):
    first = RootLease(any_root, purpose="grasp run --profile demo").acquire()
    with pytest.raises(LeaseHeld, match=rf"storage root {any_root} is in use by another writer: grasp run --profile "
                                        rf"demo \(pid {os.getpid()} on .*expires in \d+ s.*Nothing was written"):
        RootLease(any_root, purpose="grasp select").acquire(wait=0)
    first.release()


def test_a_step_renewing_its_runs_lease_keeps_the_runs_name_for_a_refused_writer(any_root):
    run = RootLease(any_root, owner="grasp-run:0123456789ab", purpose="grasp run --profile demo").acquire()
    RootLease(any_root, owner=run.owner).ensure()  # a step of that run, checking the lease before a commit
    with pytest.raises(LeaseHeld, match=r"in use by another writer: grasp run --profile demo \(pid"):
        RootLease(any_root, purpose="grasp select").acquire(wait=0)
    run.release()


def test_a_second_writer_waits_until_the_first_releases(any_root):
    first = RootLease(any_root).acquire()
    threading.Timer(1.5, first.release).start()
    began = time.monotonic()
    second = RootLease(any_root).acquire(wait=30, poll=0.2)
    assert 1.0 < time.monotonic() - began < 20
    assert list(second.holders()) == [second.owner]


def test_the_lease_of_a_writer_that_stopped_renewing_expires(any_root):
    RootLease(any_root, ttl=1.0).acquire()  # never renewed, never released: a crashed holder
    time.sleep(1.3)
    taker = RootLease(any_root).acquire(wait=0)
    assert list(taker.holders()) == [taker.owner]


def test_partition_writers_share_the_root_and_exclude_a_whole_table_writer(any_root):
    shards = [RootLease(any_root, purpose=f"shard run {i}").acquire(mode="shared") for i in range(3)]
    assert sorted(RootLease(any_root).holders()) == sorted(s.owner for s in shards)
    with pytest.raises(LeaseHeld, match=r"in use by another writer: shard run \d"):
        RootLease(any_root, purpose="a corpus rebuild").acquire(wait=0)
    for shard in shards:
        shard.release()
    rebuild = RootLease(any_root, purpose="a corpus rebuild").acquire(wait=0)
    with pytest.raises(LeaseHeld, match=r"in use by another writer: a corpus rebuild"):
        RootLease(any_root, purpose="shard run 4").acquire(wait=0, mode="shared")
    rebuild.release()


def race_for(root: str, barrier_file: str) -> bool:
    while not os.path.exists(barrier_file):  # start together
        time.sleep(0.005)
    try:
        RootLease(root, ttl=60).acquire(wait=0)
        return True
    except LeaseHeld:
        return False


def test_of_eight_writers_racing_for_a_free_root_exactly_one_wins(any_root, tmp_path):
    barrier = tmp_path / "go"
    with spawn_pool(8) as pool:
        pending = pool.starmap_async(race_for, [(any_root, str(barrier))] * 8)
        time.sleep(3)  # every worker is up and polling
        barrier.touch()
        won = pending.get(timeout=120)
    assert sum(won) == 1


def test_a_writer_that_lost_its_lease_commits_nothing(any_root):
    store = DeltaStore(any_root)
    store.write_partitions("subset_outcomes", outcome_rows("b0", 10))
    stale = RootLease(any_root, ttl=1.0, purpose="a writer paused too long").acquire()
    time.sleep(1.3)
    RootLease(any_root, purpose="the next writer").acquire()
    with stale.guarding(), pytest.raises(LeaseHeld, match=r"in use by another writer: the next writer"):
        store.write_partitions("subset_outcomes", outcome_rows("b1", 10, offset=10))
    assert store.version("subset_outcomes") == 0


def test_a_dagster_step_stops_while_another_writer_holds_the_root(tmp_path, monkeypatch):
    from assets.cli import error_chain

    root = tmp_path / "storage"
    holder = RootLease(str(root), purpose="grasp select").acquire()
    monkeypatch.setenv("GRASP_LEASE_WAIT", "0")
    with dg.instance_for_test() as instance:
        result = materialize_prepare(root, tiny_params(), instance, ["corpus_shards"], raise_on_error=False)
    holder.release()
    assert not result.success
    message = "\n".join(error_chain(e.event_specific_data.error) for e in result.all_events
                        if e.is_step_failure and e.event_specific_data is not None)
    assert "is in use by another writer: grasp select" in message
    assert not DeltaStore(str(root)).exists("corpus_shards")


# ------------------------------------------------------------------ object-store variables

def test_only_the_object_store_variables_the_scheme_needs_are_forwarded():
    environ = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1",
               "AWS_CA_BUNDLE": "/etc/ssl/x.pem", "AWS_SHARED_CREDENTIALS_FILE": "/root/.aws/c", "GOOGLE_X": "g"}
    assert storage_options_from_env("s3://bucket/root", environ) == {
        "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "eu-west-1"}
    assert storage_options_from_env("/local/root", environ) == {}


def test_an_inherited_unsafe_rename_setting_is_refused_unless_explicitly_allowed():
    environ = {"AWS_ACCESS_KEY_ID": "k", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    with pytest.raises(StorageSettingError, match=r"AWS_S3_ALLOW_UNSAFE_RENAME is set in the environment: it lets "
                                                  r"two writers commit the same Delta version"):
        storage_options_from_env("s3://bucket/root", environ)
    allowed = storage_options_from_env("s3://bucket/root", {**environ, "GRASP_ALLOW_UNSAFE_STORAGE": "true"})
    assert allowed["AWS_S3_ALLOW_UNSAFE_RENAME"] == "true"


@pytest.mark.parametrize("shown, redacted", [
    ("http://user:pw@host:5000/x", "http://user:***@host:5000/x"),
    ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("https://token@host/api", "https://***@host/api"),
    ("see s3://b/k?X-Amz-Signature=abc&x=1 now", "see s3://b/k?X-Amz-Signature=***&x=1 now"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_credentials_in_uris_are_redacted_wherever_text_is_shown(shown, redacted):
    from grasp_pipeline.infra.secrets import redact

    assert redact(shown) == redacted


def test_a_launchpad_tracking_uri_with_credentials_is_refused_without_echoing_them(tmp_path):
    from assets.resources import GraspStorage

    storage = GraspStorage(root=str(tmp_path / "root"), tracking_uri="http://grasp-user:hunter2@127.0.0.1:5000")
    with pytest.raises(ValueError, match=r"storage.tracking_uri = 'http://grasp-user:\*\*\*@127.0.0.1:5000' holds "
                                         r"credentials.*MLFLOW_TRACKING_PASSWORD") as raised:
        storage.tracker()
    assert "hunter2" not in str(raised.value)


# ------------------------------------------------------------------ two `grasp run`s at once

SECRET = "s3cr3t-Pa55-do-not-store"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two `grasp run`s started together on one root and one Dagster instance, both given a tracking
    URI with a user and password, against an MLflow server; returns their outcome and every folder."""
    base = tmp_path_factory.mktemp("two_runs")
    mlflow_dir, port = base / "mlflow", free_port()
    mlflow_dir.mkdir()
    server = start([binary("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
                    "--artifacts-destination", str(mlflow_dir / "artifacts")], port, "mlflow server",
                   mlflow_dir / "mlflow.log", env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    corpus = write_user_corpus(base / "user" / "corpus.jsonl")
    config = base / "tiny.json"
    import json

    config.write_text(json.dumps(TINY))
    home, root = base / "dagster_home", base / "storage"
    command = [str(Path(sys.executable).with_name("grasp")), "run", "--corpus", str(corpus), "--config", str(config),
               "--root", str(root), "--tracking-uri", f"http://grasp-user:{SECRET}@127.0.0.1:{port}"]
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    try:
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base, env=env)
                for _ in range(2)]
        outputs = [run.communicate(timeout=900) for run in runs]
    finally:
        stop(server)
    yield {"codes": [r.returncode for r in runs], "outputs": outputs, "home": home, "root": root,
           "mlflow": mlflow_dir, "port": port}


def test_of_two_grasp_runs_on_one_root_one_proceeds_and_the_other_stops_naming_it(two_runs):
    codes, outputs = two_runs["codes"], two_runs["outputs"]
    assert sorted(codes) == [0, 2], outputs
    loser = outputs[codes.index(2)][1]
    assert "is in use by another writer: grasp run --profile demo (pid" in loser and "Nothing was written" in loser
    with dg.DagsterInstance.from_config(str(two_runs["home"])) as instance:
        runs = instance.get_runs()
    assert sorted(r.job_name for r in runs) == ["grasp_fit_and_curate", "grasp_prepare", "grasp_retrain",
                                                "grasp_sketch"]
    assert all(r.is_success for r in runs)


def test_the_tables_of_the_run_that_proceeded_come_from_one_corpus_build(two_runs):
    store = DeltaStore(str(two_runs["root"]))
    builds = {table: set(store.read(table)["build_id"]) for table in ("corpus_shards", "task_sets",
                                                                      "gradient_sketches")}
    assert len(set.union(*builds.values())) == 1, builds
    assert store.version("corpus_shards") == 0  # one build was ever written


def test_a_tracking_password_is_in_no_metadata_run_config_lineage_mlflow_record_or_log(two_runs):
    """Every byte the runs left behind: the Dagster instance (runs, run config, events, metadata, compute
    logs), the storage root (Delta data and commits with their lineage, the lineage index), the MLflow
    server's store and artifacts, and both processes' output."""
    leaks = []
    for folder in (two_runs["home"], two_runs["root"], two_runs["mlflow"]):
        for path in Path(folder).rglob("*"):
            if path.is_file() and SECRET.encode() in path.read_bytes():
                leaks.append(str(path))
    for i, (out, err) in enumerate(two_runs["outputs"]):
        if SECRET in out or SECRET in err:
            leaks.append(f"output of run {i}")
    assert not leaks, leaks

    with dg.DagsterInstance.from_config(str(two_runs["home"])) as instance:
        run = next(r for r in instance.get_runs() if r.job_name == "grasp_prepare")
    uri = run.run_config["resources"]["storage"]["config"]["tracking_uri"]
    assert uri == f"http://127.0.0.1:{two_runs['port']}"  # the run config kept the URI, not its credentials
    store = DeltaStore(str(two_runs["root"]))
    lineage = store.read("lineage")
    assert lineage.height >= 10 and lineage.filter(pl.col("mlflow_run_id") == "").height == 0

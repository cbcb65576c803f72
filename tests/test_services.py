"""MLflow against a tracking server, object-store roots need one, and services stay on localhost."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest
from mlflow.tracking import MlflowClient

from grasp_pipeline.infra.tracking import Tracker, resolve_tracking_uri


def test_a_tracker_logs_params_metrics_and_artifacts_to_a_tracking_server(mlflow_server):
    tracker = Tracker(mlflow_server, experiment="grasp-server-test")
    with tracker.run("subset_outcomes", tags={"dagster.run_id": "r-1"}) as run:
        run.log_params({"retrain": {"steps": 4}})
        run.log_metrics({"rows": 12, "nan_is_skipped": float("nan")})
        run.log_dict({"files": ["a.jsonl"]}, "ingest_report.json")
    client = MlflowClient(tracking_uri=mlflow_server)
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"retrain.steps": "4"}
    assert logged.data.metrics == {"rows": 12.0}
    assert logged.data.tags["dagster.run_id"] == "r-1"
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["ingest_report.json"]


def test_a_failing_stage_marks_its_server_run_failed(mlflow_server):
    tracker = Tracker(mlflow_server, experiment="grasp-server-test")
    with pytest.raises(RuntimeError):
        with tracker.run("subset_outcomes") as run:
            raise RuntimeError("worker died")
    assert MlflowClient(tracking_uri=mlflow_server).get_run(run.run_id).info.status == "FAILED"


def test_tracking_uri_comes_from_config_then_environment_then_the_local_root(tmp_path):
    assert resolve_tracking_uri("http://127.0.0.1:1", str(tmp_path), environ={}) == "http://127.0.0.1:1"
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:2"}
    assert resolve_tracking_uri("", "s3://bucket/tables", environ=env) == "http://127.0.0.1:2"
    assert resolve_tracking_uri("", str(tmp_path), environ={}).startswith("sqlite:///")
    with pytest.raises(ValueError, match=r"s3://bucket/tables is an object store.*tracking_uri.*MLFLOW_TRACKING_URI"):
        resolve_tracking_uri("", "s3://bucket/tables", environ={})


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the outward interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_test_services_listen_on_localhost_only(s3_endpoint, redis_url, mlflow_server):
    outward = _non_loopback_address()
    for url in (s3_endpoint, redis_url, mlflow_server):
        parsed = urlparse(url)
        assert parsed.hostname == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", parsed.port), timeout=5):
            pass
        if outward is None:
            continue
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((outward, parsed.port)) != 0, f"{url} is reachable on {outward}"

"""Real servers on 127.0.0.1 for tests: an S3-compatible store (moto), Redis, an MLflow server.

Each fixture starts its server as a subprocess on a free localhost port (or reuses one
that `.ci/run` started, named by an environment variable) and stops what it started. A
missing binary skips the test with the reason; CI installs every one (`make services`),
so nothing skips there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent  # the venv's console scripts (moto_server, mlflow, celery)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening on 127.0.0.1:{port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def binary(name: str) -> str:
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (CI installs it: `make services`)")
    return str(found)


def start(command: list[str], port: int, name: str, log: Path, env: dict | None = None) -> subprocess.Popen:
    handle = open(log, "wb")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, process, name)
    except RuntimeError as error:
        stop(process)
        raise RuntimeError(f"{name} failed to start; log: {log}\n{log.read_text(errors='replace')[-2000:]}") from error
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the group this fixture started (the server and its workers)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """An S3-compatible endpoint URL on 127.0.0.1 (moto in server mode, or $GRASP_TEST_S3_ENDPOINT)."""
    if os.environ.get("GRASP_TEST_S3_ENDPOINT"):
        yield os.environ["GRASP_TEST_S3_ENDPOINT"]
        return
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    process = start([binary("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, "moto_server", log)
    yield f"http://127.0.0.1:{port}"
    stop(process)


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch) -> str:
    """A fresh bucket on the S3 server, its credentials in the environment only; returns the root URI."""
    import boto3

    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "grasp-test-key",
           "AWS_SECRET_ACCESS_KEY": "grasp-test-secret-do-not-log", "AWS_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    bucket = f"grasp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/tables"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis server on 127.0.0.1 (Debian's redis-server, or $GRASP_TEST_REDIS_URL)."""
    if os.environ.get("GRASP_TEST_REDIS_URL"):
        yield os.environ["GRASP_TEST_REDIS_URL"]
        return
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = start([binary("redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                     "--appendonly", "no", "--dir", str(folder)], port, "redis-server", folder / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    stop(process)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """An MLflow tracking server on 127.0.0.1 with its own SQLite store and artifact folder
    (or $GRASP_TEST_MLFLOW_URI); returns its URI."""
    if os.environ.get("GRASP_TEST_MLFLOW_URI"):
        yield os.environ["GRASP_TEST_MLFLOW_URI"]
        return
    port = free_port()
    folder = tmp_path_factory.mktemp("mlflow_server")
    process = start([binary("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                     "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                     "--artifacts-destination", str(folder / "artifacts")],
                    port, "mlflow server", folder / "mlflow.log",
                    env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no background job consumers
    yield f"http://127.0.0.1:{port}"
    stop(process)

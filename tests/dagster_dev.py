"""`dagster dev` (webserver, daemon and code server) on localhost with deploy/dagster.yaml: the
launcher shared by the tests that drive a real deployment (test_ui.py, test_run_monitoring.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .services import free_port

REPO = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 300


class Server:
    def __init__(self, port: int, home: Path, root: Path, log: Path, process: subprocess.Popen):
        self.port, self.home, self.root, self.log, self.process = port, home, root, log, process
        self.url = f"http://127.0.0.1:{port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(f"{self.url}/graphql", method="POST",
                                         data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.loads(response.read())
        assert "errors" not in payload, payload
        return payload["data"]

    def stale_status_by_partition(self, asset: str, partitions: list[str]) -> list[str]:
        data = self.graphql("""query ($key: AssetKeyInput!, $partitions: [String!]!) {
            assetNodeOrError(assetKey: $key) {
              ... on AssetNode { staleStatusByPartition(partitions: $partitions) } } }""",
                            {"key": {"path": [asset]}, "partitions": partitions})
        return data["assetNodeOrError"]["staleStatusByPartition"]

    def stale_status(self) -> dict[str, str]:
        data = self.graphql("{ assetNodes { assetKey { path } staleStatus staleCauses { reason key { path } } } }")
        return {"/".join(n["assetKey"]["path"]): n["staleStatus"] for n in data["assetNodes"]}


@contextmanager
def dagster_dev(base: Path, env: dict[str, str]) -> Iterator[Server]:
    """Starts `dagster dev` with its DAGSTER_HOME (deploy/dagster.yaml: queued runs the daemon dequeues,
    pools), storage root and log under `base` and `env` added to its environment; yields it once the
    code location has loaded, and stops it."""
    from assets.cli import ensure_dagster_home

    home, root, log = base / "dagster_home", base / "storage", base / "dagster-dev.log"
    ensure_dagster_home(home)
    assert (home / "dagster.yaml").read_text() == (REPO / "deploy" / "dagster.yaml").read_text()
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "GRASP_ROOT": str(root), "OMP_NUM_THREADS": "2",
           "PYTHONUNBUFFERED": "1", **env}
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        process = subprocess.Popen([str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                   cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    server = Server(port, home, root, log, process)
    try:
        _wait_until_loaded(server)
        yield server
    finally:
        _stop(process)


def _wait_until_loaded(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"dagster dev exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            data = server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                                  "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
            entries = data["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries
                          if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
                assert not errors, errors
                return
        except (OSError, ValueError):
            pass
        time.sleep(2)
    pytest.fail(f"the code location did not load within {STARTUP_SECONDS}s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """Interrupts `dagster dev` (it stops its webserver, daemon and code server), then kills
    what is left of its process group; every wait is bounded."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group of the process this test started
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass

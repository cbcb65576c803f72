"""A dead run frees its pool slot: under `dagster dev` with deploy/dagster.yaml, a run whose worker is
SIGKILLed inside a `torch` step is marked FAILED by run monitoring, the next queued run starts
and finishes its own `torch` steps, the crashed run is retried, and a run whose step failed is not.
"""

from __future__ import annotations

import os
import re
import signal
import time

import dagster as dg
import pytest

from .conftest import tiny_params
from .dagster_dev import REPO, Server, dagster_dev

DEADLINE_SECONDS = 420


@pytest.fixture(scope="module")
def monitored(tmp_path_factory):
    # a killed writer's lease lapses after GRASP_LEASE_TTL: shorter than the default so the test is quick
    env = {"GRASP_LEASE_TTL": "15", "PYTHONPATH": str(REPO)}
    with dagster_dev(tmp_path_factory.mktemp("monitoring"), env) as server:
        yield server


def submit(client, server: Server, params, tags=None, corpus_override=None) -> str:
    from assets.run_config import job_run_config

    config = job_run_config("grasp_prepare", params, str(server.root))
    config["execution"] = {"config": {"in_process": {}}}  # the steps run inside the run worker
    config["ops"]["corpus_shards"]["config"].update(corpus_override or {})
    return client.submit_job_execution("grasp_prepare", run_config=config, tags=tags or {})


def wait_for(condition, what: str, server: Server, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s:\n{server.log_tail()}")


def test_a_run_killed_inside_a_torch_step_frees_its_slot_for_the_next_queued_run(monitored):
    from dagster_graphql import DagsterGraphQLClient

    server = monitored
    client = DagsterGraphQLClient("127.0.0.1", port_number=server.port, timeout=60)
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        # a run whose step fails (a bad setting): failed, and not retried
        bad = submit(client, server, tiny_params(), tags={"case": "step-failure"}, corpus_override={"shard_size": 0})
        wait_for(lambda: instance.get_run_by_id(bad).status == dg.DagsterRunStatus.FAILURE, "the bad run failing",
                 server)
        # the victim: a long warm-up (a torch step); the next run waits behind it in the queue
        victim = submit(client, server, tiny_params(reference={"steps": 20000}), tags={"case": "victim"})
        wait_for(lambda: any(e.dagster_event and e.dagster_event.step_key == "reference_model"
                             for e in instance.all_logs(victim, of_type=dg.DagsterEventType.STEP_START)),
                 "the victim entering reference_model", server)
        follower = submit(client, server, tiny_params(), tags={"case": "follower"})
        time.sleep(3)
        assert instance.get_run_by_id(follower).status == dg.DagsterRunStatus.QUEUED
        pid = next(int(m.group(1)) for e in instance.all_logs(victim, of_type=dg.DagsterEventType.ENGINE_EVENT)
                   if (m := re.search(r"Started process for run \(pid: (\d+)\)", e.message or "")))
        os.kill(pid, signal.SIGKILL)  # the run worker, inside the torch step

        wait_for(lambda: instance.get_run_by_id(victim).status == dg.DagsterRunStatus.FAILURE,
                 "run monitoring marking the killed run FAILED", server)
        wait_for(lambda: instance.get_run_by_id(follower).status in (dg.DagsterRunStatus.SUCCESS,
                                                                     dg.DagsterRunStatus.FAILURE),
                 "the queued run finishing", server)
        assert instance.get_run_by_id(follower).status == dg.DagsterRunStatus.SUCCESS, server.log_tail()
        steps = {e.dagster_event.step_key for e in instance.all_logs(follower,
                                                                     of_type=dg.DagsterEventType.STEP_SUCCESS)}
        assert "reference_model" in steps  # it got the torch slot the killed run held

        retries = wait_for(lambda: [r for r in instance.get_runs()
                                    if r.tags.get("dagster/parent_run_id") == victim], "the crashed run's retry",
                                    server)
        assert len(retries) == 1
        assert not [r for r in instance.get_runs() if r.tags.get("dagster/parent_run_id") == bad]

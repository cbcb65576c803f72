"""A `kill -9` of `grasp run` leaves nothing stuck: the next `grasp run` on the same instance releases
the dead run's `torch` pool slot instead of waiting on it forever (real process, real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from assets.cli.instance import ensure_dagster_home, owner_tags, release_dead_runs

from .conftest import TINY, write_user_corpus


def claimed_torch_runs(instance: dg.DagsterInstance) -> set[str]:
    info = instance.event_log_storage.get_concurrency_info("torch")
    return {slot.run_id for slot in info.claimed_slots}


def test_a_killed_grasp_run_holds_its_pool_slot_until_the_next_run_releases_it(tmp_path):
    home = Path(ensure_dagster_home(tmp_path / "dagster_home"))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    corpus = write_user_corpus(tmp_path / "user" / "corpus.jsonl")
    grasp = Path(sys.executable).with_name("grasp")
    victim = subprocess.Popen(
        [str(grasp), "run", "--profile", "smoke", "--corpus", str(corpus), "--config", str(config),
         "--root", str(tmp_path / "storage")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "DAGSTER_HOME": str(home)})
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 300
            while not claimed_torch_runs(instance):  # a torch step (the reference model) is running
                assert victim.poll() is None and time.monotonic() < deadline, "no torch step started"
                time.sleep(0.5)
            (held_by,) = claimed_torch_runs(instance)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            time.sleep(1)
            # the bug: nothing of the dead run frees its slot or ends it
            assert claimed_torch_runs(instance) == {held_by}
            assert instance.get_run_by_id(held_by).status == dg.DagsterRunStatus.STARTED

            assert release_dead_runs(instance) == [held_by]
            assert claimed_torch_runs(instance) == set()
            assert instance.get_run_by_id(held_by).status == dg.DagsterRunStatus.FAILURE
            assert release_dead_runs(instance) == []  # idempotent: nothing else to release
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)


def test_a_live_runs_slot_is_left_alone(tmp_path):
    home = Path(ensure_dagster_home(tmp_path / "dagster_home"))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.create_run_for_job(
            dg.GraphDefinition("noop", node_defs=[]).to_job(), run_id=None,
            tags=owner_tags(),
            status=dg.DagsterRunStatus.STARTED)
        assert release_dead_runs(instance) == []
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED


"""Worker processes die with the process that made their pool: a `kill -9` of `grasp run` leaves
no retraining worker behind (real processes, a real SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from grasp_pipeline.infra.processes import process_exists, worker_pool

OWNER = textwrap.dedent("""
    import time
    from grasp_pipeline.infra.processes import worker_pool
    from tests.test_processes import mark_worker, pid_of_worker

    with worker_pool(3, mark_worker, ("owner",), preload="tests.test_processes") as pool:
        pids = sorted(set(pool.map(pid_of_worker, range(12))))
        print(" ".join(map(str, pids)), flush=True)
        time.sleep(600)  # killed long before this
""")


def mark_worker(value: str) -> None:
    os.environ["GRASP_TEST_WORKER_MARK"] = value


def worker_mark(_) -> str:
    return os.environ.get("GRASP_TEST_WORKER_MARK", "")


def pid_of_worker(_) -> int:
    time.sleep(0.2)  # each worker busy long enough that the pool starts them all
    return os.getpid()


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_workers_exit_within_seconds_of_their_owner_being_killed():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        workers = [int(p) for p in owner.stdout.readline().split()]
        assert workers and all(process_exists(p) for p in workers)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert wait_until(lambda: not any(process_exists(p) for p in workers), 10), \
            [p for p in workers if process_exists(p)]
    finally:
        owner.kill()


def test_a_pool_still_runs_its_initializer_before_its_work():
    with worker_pool(2, mark_worker, ("set by the initializer",), preload="tests.test_processes") as pool:
        assert set(pool.map(worker_mark, range(4))) == {"set by the initializer"}

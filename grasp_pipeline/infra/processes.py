"""Worker processes for the CPU-bound stages (surrogate cross-validation, retraining), and
whether another process is still alive (run-worker health checks, MLflow run ownership).

Workers start from multiprocessing's fork server: a fresh interpreter that has imported only
the module the work needs, forked once per worker. Forking the stage's own process instead
would copy whatever locks its other threads (Dagster's log capture, torch.compile's helpers,
polars' pool) hold at that instant, and a worker can then wait on one forever. Arguments
reach the workers pickled, once per worker (the pool's `initargs`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def available_cores() -> int:
    """Returns the CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_pool(workers: int, initializer: Callable, initargs: tuple, preload: str) -> ProcessPoolExecutor:
    """Returns a pool of `workers` processes, each run through `initializer(*initargs)` first;
    `preload` is the module the fork server imports once, so workers start without importing it."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # the default preload is the caller's __main__ (the CLI, pytest, Dagster): not needed here
        context.set_forkserver_preload([preload])
    else:
        context = multiprocessing.get_context("spawn")
    owner = os.getpid()
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(owner, process_start_ticks(owner), initializer, initargs))


def _start_worker(owner: int, owner_ticks: str, initializer: Callable, initargs: tuple) -> None:
    """Runs in each worker: dies with the process that made the pool, then the caller's initializer.

    A pool's workers wait on their task queue forever once its owner is gone (a `kill -9` of
    `grasp run` left 12 workers and 1.3 GB behind), so each one watches its owner: a daemon thread
    that exits the worker within a second of the owner's death, and on Linux the kernel's
    parent-death signal as well (the fork server, the workers' parent, exits with the owner).
    """
    _signal_on_parent_death()
    threading.Thread(target=_watch_owner, args=(owner, owner_ticks), name="grasp-owner-watch", daemon=True).start()
    initializer(*initargs)


def _watch_owner(owner: int, owner_ticks: str, interval: float = 0.5) -> None:
    while process_exists(owner) and process_start_ticks(owner) == owner_ticks:
        time.sleep(interval)
    os._exit(1)  # the owner is gone: nothing will collect this worker's results


def _signal_on_parent_death() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the watching thread alone
        pass


def process_exists(pid: int) -> bool:
    """Whether a process with `pid` exists (one we may not signal counts: it is someone's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_ticks(pid: int) -> str:
    """A process's start time in clock ticks after boot, from /proc ("" where /proc is unavailable).

    A pid can be reused once its process exits; (pid, start ticks) names one process.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_started_at(pid: int) -> float | None:
    """A process's start time in seconds since the epoch, None where /proc is unavailable."""
    ticks = process_start_ticks(pid)
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + int(ticks) / _CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return None

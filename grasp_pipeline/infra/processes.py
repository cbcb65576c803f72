"""Worker processes for the CPU-bound stages (surrogate cross-validation, retraining), and
whether another process is still alive (run-worker health checks, MLflow run ownership).

Workers start from multiprocessing's fork server: a fresh interpreter that has imported only
the module the work needs, forked once per worker. Forking the stage's own process instead
would copy whatever locks its other threads (Dagster's log capture, torch.compile's helpers,
polars' pool) hold at that instant, and a worker can then wait on one forever. Arguments
reach the workers pickled, once per worker (the pool's `initargs`).
"""

from __future__ import annotations

import multiprocessing
import os
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
    return ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)


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

"""Worker processes for the CPU-bound stages (surrogate cross-validation, retraining).

Workers start from multiprocessing's fork server: a fresh interpreter that has imported only
the module the work needs, forked once per worker. Forking the stage's own process instead
would copy whatever locks its other threads (Dagster's log capture, torch.compile's helpers,
polars' pool) hold at that instant, and a worker can then wait on one forever. Arguments
reach the workers pickled, once per worker (the pool's `initargs`).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable


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

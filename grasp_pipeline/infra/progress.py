"""Progress reports: stages count their shards, batches, steps and rounds; callers choose where
the counts go.

The library never prints or logs progress and knows nothing of Dagster. A stage opens a
`task(name, total, unit)` and advances it (optionally with metrics such as the training
loss); whoever runs the stage installs callbacks with `reporting(callback)` for the
duration of a block: the CLI draws bars on stderr, the Dagster layer writes rate-limited
log lines and sends metrics to MLflow. Callbacks nest: an inner `reporting` block sends
events to its callback and to every callback installed around it. Without a callback a
report costs one context-variable lookup.

Tasks nest too: a task opened while another is open is its child (`path` holds the names
of the enclosing tasks, outermost first), so a consumer can show "retraining › models".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressEvent:
    """One report of a task: `done` of `total` (None = unknown) `unit`s after `seconds`."""

    task: str
    unit: str
    done: int
    total: int | None
    seconds: float
    path: tuple[str, ...] = ()  # names of the enclosing tasks, outermost first
    metrics: Mapping[str, float] = field(default_factory=dict)  # values at `done`, e.g. {"train_loss": 3.2}
    finished: bool = False
    failed: bool = False  # finished by an exception (the console marks it ✗, not ✓)

    @property
    def depth(self) -> int:
        """0 for a task opened outside any other task."""
        return len(self.path)

    def describe(self) -> str:
        """One line: `path › task: 3/12 shard (25%), 4.1 s, loss=3.2`, or `…: done, 12 shard in 14.2 s`."""
        name = " › ".join((*self.path, self.task))
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        if self.finished:
            return f"{name}: done, {count} {self.unit} in {self.seconds:.1f} s"
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        values = "".join(f", {k}={v:.4g}" for k, v in self.metrics.items())
        return f"{name}: {count} {self.unit}{percent}, {self.seconds:.1f} s{values}"


Callback = Callable[[ProgressEvent], None]

_callbacks: ContextVar[tuple[Callback, ...]] = ContextVar("grasp_progress_callbacks", default=())
_open_tasks: ContextVar[tuple[str, ...]] = ContextVar("grasp_progress_open_tasks", default=())


@contextmanager
def reporting(callback: Callback) -> Iterator[None]:
    """Sends every event reported inside the block to `callback` (and to the callbacks already installed)."""
    token = _callbacks.set(_callbacks.get() + (callback,))
    try:
        yield
    finally:
        _callbacks.reset(token)


def active() -> bool:
    """True when some callback listens (callers may skip computing metrics otherwise)."""
    return bool(_callbacks.get())


class Task:
    """A counter of one loop of a stage; use as a context manager (it reports `finished` on exit)."""

    def __init__(self, name: str, total: int | None = None, unit: str = "item"):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.began = time.perf_counter()
        self.path = _open_tasks.get()
        self._token = None
        self._closed = False

    def __enter__(self) -> Task:
        self._token = _open_tasks.set(self.path + (self.name,))
        self._emit({}, finished=False)
        return self

    def __exit__(self, exc_type, *exc) -> None:
        _open_tasks.reset(self._token)
        self.close(failed=exc_type is not None)

    def advance(self, n: int = 1, **metrics: float) -> None:
        """Counts `n` more units done; `metrics` are values at this point (e.g. a loss)."""
        self.done += n
        self._emit(metrics, finished=False)

    def close(self, failed: bool = False) -> None:
        """Reports the task finished (once); `failed` when it ended by an exception."""
        if not self._closed:
            self._closed = True
            self._emit({}, finished=True, failed=failed)

    def _emit(self, metrics: Mapping[str, float], finished: bool, failed: bool = False) -> None:
        callbacks = _callbacks.get()
        if not callbacks:
            return
        event = ProgressEvent(self.name, self.unit, self.done, self.total, time.perf_counter() - self.began,
                              self.path, dict(metrics), finished, failed)
        for callback in callbacks:
            callback(event)


def task(name: str, total: int | None = None, unit: str = "item") -> Task:
    """Returns a Task counting `total` `unit`s (a context manager: `with task(...) as t: t.advance()`)."""
    return Task(name, total, unit)

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
of the enclosing tasks, outermost first), so a consumer can show "retraining › models". A
loop says which item it is on (`Task.at("python_docs-0001")`), and the lines of the tasks inside
it carry that position ("gradient_sketches › shard python_docs-0001 › examples: 64/256"), so a log
file read line by line still says which shard or round a line belongs to. A stage may know its
place in the graph (`ordinal`: stage k of N), and a line of a loop with a total estimates the
time left from the loop's rate so far.
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
    where: tuple[str, ...] = ()  # the enclosing tasks as lines show them: a name, or "<unit> <item>" (`Task.at`)
    ordinal: tuple[int, int] | None = None  # (k, N): this task is stage k of the graph's N
    repeat: int = 1  # n: the n-th loop of this name at this place (lines show `#n` from the second on)
    failed: bool = False  # finished by an exception (the console marks it ✗, not ✓)

    @property
    def titled(self) -> str:
        """The task's name, with its place in the graph for a stage that knows it: `surrogates (stage 7 of 14)`."""
        task = self.task if self.repeat == 1 else f"{self.task} #{self.repeat}"
        return task if self.ordinal is None else f"{task} (stage {self.ordinal[0]} of {self.ordinal[1]})"

    @property
    def remaining(self) -> float | None:
        """Seconds left at the rate so far (None without a total or before the first unit)."""
        if self.finished or not self.total or not 0 < self.done < self.total:
            return None
        return self.seconds * (self.total - self.done) / self.done

    @property
    def depth(self) -> int:
        """0 for a task opened outside any other task."""
        return len(self.path)

    def describe(self) -> str:
        """One line: `path › task: 3/12 shard (25%), 4.1 s, ~12 s left, loss=3.2`, or `…: done, 12 shard in
        14.2 s`; the path shows the enclosing loops' current items, a stage its place (`stage 3 of 14`)."""
        name = " › ".join((*(self.where or self.path), self.titled))
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        if self.finished:
            return f"{name}: done, {count} {self.unit} in {self.seconds:.1f} s"
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        values = "".join(f", {k}={v:.4g}" for k, v in self.metrics.items())
        left = "" if self.remaining is None else f", ~{duration(self.remaining)} left"
        return f"{name}: {count} {self.unit}{percent}, {self.seconds:.1f} s{left}{values}"


def duration(seconds: float) -> str:
    """A rough duration for people: `42 s`, `7 min`, `2.5 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


Callback = Callable[[ProgressEvent], None]

_callbacks: ContextVar[tuple[Callback, ...]] = ContextVar("grasp_progress_callbacks", default=())
_open_tasks: ContextVar[tuple[Task, ...]] = ContextVar("grasp_progress_open_tasks", default=())


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

    def __init__(self, name: str, total: int | None = None, unit: str = "item",
                 ordinal: tuple[int, int] | None = None):
        self.name, self.total, self.unit, self.ordinal = name, total, unit, ordinal
        self.done = 0
        self.item: str | None = None
        self.began = time.perf_counter()
        enclosing = _open_tasks.get()
        self._enclosing = enclosing
        self._opened: dict[tuple[str, str | None], int] = {}  # loops opened inside this one, by (name, item)
        # a second loop of the same name at the same place gets `#2`, so its `done` line is not the first's again
        self.repeat = 1
        if enclosing:
            key = (name, enclosing[-1].item)
            self.repeat = enclosing[-1]._opened[key] = enclosing[-1]._opened.get(key, 0) + 1
        self.path = tuple(t.name for t in enclosing)
        # read when the task opens: the enclosing loops are at the item this task works within
        self.where = tuple(t.label for t in enclosing)
        self._token = None
        self._closed = False

    @property
    def label(self) -> str:
        """How the lines of the tasks inside this one show it: `<unit> <item>` while at an item, else the name."""
        if self.item is not None:
            return f"{self.unit} {self.item}"
        return self.name if self.repeat == 1 else f"{self.name} #{self.repeat}"

    def at(self, item) -> None:
        """Says which item (a shard key, a round number) the loop works on now; tasks opened inside
        it from here on carry it in their lines."""
        self.item = str(item)

    def __enter__(self) -> Task:
        self._token = _open_tasks.set(self._enclosing + (self,))
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
                              self.path, dict(metrics), finished, self.where, self.ordinal, self.repeat, failed)
        for callback in callbacks:
            callback(event)


def task(name: str, total: int | None = None, unit: str = "item", ordinal: tuple[int, int] | None = None) -> Task:
    """Returns a Task counting `total` `unit`s (a context manager: `with task(...) as t: t.advance()`);
    `ordinal` (k, N) says it is stage k of N."""
    return Task(name, total, unit, ordinal)

"""Progress on the command line: the library's progress events as bars or lines on stderr.

On a terminal every open task is a tqdm bar (the stage on top, its loops below it); a
finished stage leaves one line ("✓ surrogates 42.3 s"; a failed one "✗ surrogates failed after 3.1 s").
Anywhere else (a pipe, a log file, CI) a bar would be a stream of carriage returns, so events become plain lines: each
stage's start and end, the end of each of its loops, and in between at most one line per
`interval` seconds — enough that no stretch of a run is silent for long.
"""

from __future__ import annotations

import sys
import time

from grasp_pipeline.infra.progress import ProgressEvent


class ConsoleProgress:
    """A progress callback drawing tqdm bars on a terminal and rate-limited lines elsewhere."""

    def __init__(self, stream=None, interval: float = 5.0, bars: bool | None = None, clock=time.monotonic):
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self.bars = self.stream.isatty() if bars is None else bars
        self._open: dict[tuple[str, ...], object] = {}
        self.last = -float("inf")

    def __call__(self, event: ProgressEvent) -> None:
        if self.bars:
            self._bar(event)
        else:
            self._line(event)

    def _line(self, event: ProgressEvent) -> None:
        now = self.clock()
        if event.depth == 0 and event.unit == "stage":  # a stage starting or ending
            text = _stage_line(event) if event.finished else f"▶ {event.titled}"
        elif event.finished and event.depth <= 1 or now - self.last >= self.interval:
            text = f"  {event.describe()}"
        else:
            return
        self.last = now
        print(text, file=self.stream, flush=True)

    def _bar(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        key = (*event.path, event.task)
        bar = self._open.get(key)
        if bar is None and not event.finished:
            bar = tqdm(total=event.total, desc="  " * event.depth + event.task, unit=event.unit, file=self.stream,
                       position=event.depth, leave=False, dynamic_ncols=True)
            self._open[key] = bar
        if bar is None:
            return
        bar.n = event.done
        if event.metrics:
            bar.set_postfix({k: f"{v:.4g}" for k, v in event.metrics.items()}, refresh=False)
        bar.refresh()
        if event.finished:
            bar.close()
            del self._open[key]
            if event.depth == 0:
                tqdm.write(_stage_line(event), file=self.stream)


def _stage_line(event: ProgressEvent) -> str:
    """The line a finished stage leaves: ✓ only when it succeeded."""
    if event.failed:
        return f"✗ {event.titled} failed after {event.seconds:.1f} s"
    return f"✓ {event.titled} {event.seconds:.1f} s"

"""What a stage returns, and the decorator that pins its reads.

Each stage is a plain function of a `DeltaStore`: it reads input tables, computes, and
writes output tables. It returns a `StageResult` (tables written with their versions, row
counts and schemas; metrics; small artifacts; figures) that the Dagster layer turns into
materialisation metadata and an MLflow run. Nothing in `grasp_pipeline.stages` imports
Dagster, so every stage runs and is tested on its own."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import polars as pl

from ..infra.storage import DeltaStore, PinnedReads


def table_schema(frame: pl.DataFrame) -> dict[str, str]:
    """Returns {column: type} for metadata display."""
    return {name: str(dtype) for name, dtype in frame.schema.items()}


@dataclass
class TableWrite:
    table: str
    version: int
    rows: int
    schema: dict[str, str]


@dataclass
class StageResult:
    writes: list[TableWrite] = field(default_factory=list)
    reads: dict[str, int] = field(default_factory=dict)  # table -> Delta version read (lineage)
    metrics: dict = field(default_factory=dict)
    artifacts: dict[str, dict] = field(default_factory=dict)  # file name -> JSON payload
    figures: dict = field(default_factory=dict)  # file name -> matplotlib figure

    def write(self, store: DeltaStore, table: str, frame: pl.DataFrame) -> int:
        """Replaces the whole table; returns its new version."""
        version = store.write(table, frame)
        self.writes.append(TableWrite(table, version, frame.height, table_schema(frame)))
        return version

    def write_partitions(self, store: DeltaStore, table: str, frame: pl.DataFrame,
                         current: list[str] | None = None) -> int:
        """Replaces the partitions present in `frame` (and removes those outside `current`, when
        given: see DeltaStore.write_partitions); returns the table's new version."""
        version = store.write_partitions(table, frame, current=current)
        self.writes.append(TableWrite(table, version, frame.height, table_schema(frame)))
        return version


def stage(fn):
    """Runs a stage against pinned reads and records the input versions in `result.reads`."""

    @functools.wraps(fn)
    def run(store: DeltaStore, *args, **kwargs) -> StageResult:
        # a direct call (no Dagster run) records the stage's name as the writer, as a Dagster run would
        pinned = PinnedReads(store, asset=fn.__name__.removeprefix("run_"))
        result = fn(pinned, *args, **kwargs)
        written = {w.table for w in result.writes}
        result.reads = {t: v for t, v in sorted(pinned.versions.items()) if t not in written}
        return result

    return run



def refuse_non_finite(table: str, frame: pl.DataFrame, columns: list[str], key: list[str], cause: str) -> None:
    """Raises FloatingPointError before `table` is committed when a value of `columns` (numbers, lists of
    numbers, or JSON text holding numbers) is NaN or ±inf, naming the first bad row by its `key` columns and
    `cause` (the setting that likely made it): a committed non-finite result is read, fitted and selected on
    by every stage after it, and the blocking check that would catch it runs only after the commit."""
    bad = pl.lit(False)
    for column in columns:
        dtype = frame.schema[column]
        if dtype == pl.Utf8:  # JSON text: json.dumps writes NaN / Infinity for non-finite floats
            finite = ~pl.col(column).str.contains(r"\bNaN\b|Infinity")
        elif isinstance(dtype, (pl.List, pl.Array)):
            finite = pl.col(column).list.eval(pl.element().is_finite()).list.all()
        else:
            finite = pl.col(column).is_finite()
        bad = bad | ~finite.fill_null(True)
    offending = frame.filter(bad)
    if offending.height:
        first = offending.row(0, named=True)
        named = ", ".join(f"{k}={first[k]!r}" for k in key)
        values = ", ".join(f"{c}={_short(first[c])}" for c in columns)
        raise FloatingPointError(f"{table}: {offending.height} of {frame.height} rows are not finite (first: "
                                 f"{named}: {values}); {cause}; nothing was written")


def _short(value) -> str:
    """A value for an error message: lists and long text cut to their first elements / characters."""
    if isinstance(value, list):
        return f"[{', '.join(f'{v:.4g}' for v in value[:3])}{', …' if len(value) > 3 else ''}]"
    return repr(value)[:80] if isinstance(value, str) else f"{value}"

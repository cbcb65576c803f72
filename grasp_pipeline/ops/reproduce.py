"""Reproduce a selection or mixture from its lineage: re-run the library stage that wrote it
against the table versions and parameters its commit recorded, and compare the rows.

It sits above the stages it re-runs; the lineage it reads is `grasp_pipeline.infra.lineage`.
"""

from __future__ import annotations

import dataclasses

import polars as pl

from ..config.params import MixtureParams, SelectionParams
from ..infra.lineage import OUTPUT_ID_COLUMNS, LineageError, find_output, lineage_of
from ..infra.storage import DeltaStore, check_contract
from ..stages import run_curated_selection, run_mixture_weights


class _RecordedVersions:
    """A read-only store view for reproduction: every table reads at its recorded version.

    `version()` answers the recorded version (so a stage's own pinning keeps it), reading a
    table the lineage does not name is an error, and writes are captured, not written.
    """

    def __init__(self, store: DeltaStore, versions: dict[str, int]):
        self.store = store
        self.versions = dict(versions)
        self.written: dict[str, pl.DataFrame] = {}
        self.root = store.root
        self.storage_options = store.storage_options

    def _check(self, table: str) -> int:
        if table not in self.versions:
            raise LineageError(f"reproduction read table {table!r}, which the recorded lineage does not list "
                               f"(recorded reads: {sorted(self.versions)}); the stage's code has changed since")
        return self.versions[table]

    def exists(self, table: str) -> bool:
        return table in self.versions

    def version(self, table: str) -> int:
        return self._check(table)

    def read(self, table: str, version: int | None = None, columns: list[str] | None = None,
             where: dict[str, list[str]] | None = None) -> pl.DataFrame:
        recorded = self._check(table)
        try:
            return self.store.read(table, version=recorded if version is None else version, columns=columns,
                                   where=where)
        except Exception as error:
            raise LineageError(f"cannot read {table}@{recorded} through time travel ({error}); was the table "
                               "vacuumed?") from error

    def partition_values(self, table: str, column: str, version: int | None = None) -> list[str]:
        recorded = self._check(table)
        return self.store.partition_values(table, column, recorded if version is None else version)

    def column_names(self, table: str, version: int | None = None) -> list[str]:
        return self.store.column_names(table, self._check(table) if version is None else version)

    def uri(self, table: str) -> str:
        return self.store.uri(table)

    def write(self, table: str, frame: pl.DataFrame, lineage: dict | None = None) -> int:
        check_contract(table, frame)
        self.written[table] = frame
        return -1

    def write_partitions(self, table: str, frame: pl.DataFrame, lineage: dict | None = None,
                         current: list[str] | None = None) -> int:
        return self.write(table, frame)


def _stage_for(table: str):
    return {"curated_selections": (run_curated_selection, SelectionParams),
            "mixture_weights": (run_mixture_weights, MixtureParams)}[table]


def params_from_record(params_cls, recorded: dict):
    """Rebuilds a parameter dataclass from its recorded JSON (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(params_cls)}
    unknown = set(recorded) - names
    if unknown:
        raise LineageError(f"recorded parameters {sorted(unknown)} are not fields of {params_cls.__name__} any more")
    defaults = params_cls()
    values = {k: tuple(v) if isinstance(v, list) and isinstance(getattr(defaults, k), tuple) else v
              for k, v in recorded.items()}
    return dataclasses.replace(defaults, **values)


def _compare(table: str, stored: pl.DataFrame, rebuilt: pl.DataFrame, tolerance: float) -> list[str]:
    diff = []
    if table == "curated_selections":
        stored, rebuilt = stored.sort("rank"), rebuilt.sort("rank")
        exact, close = ["rank", "example_id", "domain", "budget"], ["gain"]
    else:
        stored, rebuilt = stored.sort("domain"), rebuilt.sort("domain")
        exact, close = ["domain", "budget"], ["weight", "predicted_utility"]
    if stored.height != rebuilt.height:
        diff.append(f"row count: stored {stored.height}, reproduced {rebuilt.height}")
    n = min(stored.height, rebuilt.height)
    for column in exact:
        if column not in stored.columns or column not in rebuilt.columns:
            continue
        a, b = stored[column].to_list()[:n], rebuilt[column].to_list()[:n]
        bad = [i for i in range(n) if a[i] != b[i]]
        if bad:
            diff.append(f"{column}: {len(bad)} of {n} rows differ (first at row {bad[0]}: stored {a[bad[0]]!r}, "
                        f"reproduced {b[bad[0]]!r})")
    for column in close:
        a, b = stored[column].to_list()[:n], rebuilt[column].to_list()[:n]
        bad = [i for i in range(n) if abs(a[i] - b[i]) > tolerance * max(1.0, abs(a[i]))]
        if bad:
            worst = max(bad, key=lambda i: abs(a[i] - b[i]))
            diff.append(f"{column}: {len(bad)} of {n} rows differ by more than {tolerance:g} (worst row {worst}: "
                        f"stored {a[worst]!r}, reproduced {b[worst]!r})")
    return diff


def reproduce(store: DeltaStore, output_id: str, version: int | None = None, tolerance: float = 1e-9,
              table: str | None = None) -> dict:
    """Rebuilds a selection or mixture from the versions and parameters its lineage recorded.

    Re-runs the library stage (`run_curated_selection` or `run_mixture_weights`) against a view of
    the store that reads every input at the recorded Delta version (time travel) and writes
    nothing, then compares its rows for `output_id` with the stored ones: same examples in the
    same ranks (selections), same domains, weights and predicted utility within `tolerance`
    (relative for values above 1). Returns {"matches", "diff", "table", "version", ...}.
    """
    table, version = find_output(store, output_id, version, table)
    row = lineage_of(store, table, version)
    if row is None:
        raise LineageError(f"no lineage recorded for {table}@{version}; cannot reproduce it")
    stage_fn, params_cls = _stage_for(table)
    recorded = dict(row["params"])
    # the task weights it used: a `grasp select --task-weight` re-curation's, or those of a selection made
    # when they were a selection/mixture setting; absent, the stage reads the loop's target as recorded
    task_weights = recorded.pop("task_weights", None)
    params = params_from_record(params_cls, recorded)
    view = _RecordedVersions(store, row["reads"])
    result = stage_fn(view, params, task_weights)
    column = OUTPUT_ID_COLUMNS[table]
    stored = store.read(table, version=version).filter(pl.col(column) == output_id)
    rebuilt = view.written.get(table, pl.DataFrame()).filter(pl.col(column) == output_id) \
        if table in view.written else pl.DataFrame()
    diff = []
    if rebuilt.is_empty():
        ids = sorted(view.written[table][column].unique().to_list()) if table in view.written else []
        diff.append(f"the reproduction produced no rows for {output_id!r} (it produced {ids})")
    else:
        diff += _compare(table, stored, rebuilt, tolerance)
    if result.reads != row["reads"]:
        diff.append(f"the reproduction read {result.reads}, the lineage recorded {row['reads']}")
    return {"id": output_id, "table": table, "version": version, "asset": row["asset"],
            "code_version": row["code_version"], "reads": row["reads"], "params": row["params"],
            "rows": stored.height, "matches": not diff, "diff": diff}

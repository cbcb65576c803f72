"""Table maintenance that keeps history reproducible: retention properties, compaction,
checkpoints and a vacuum that spares every version lineage needs.

Per table, in order:

1. **Retention**: `delta.logRetentionDuration` / `delta.deletedFileRetentionDuration` are set
   (when they differ), so log cleanup at checkpoints never drops the versions `grasp lineage
   --reproduce` time-travels to (delta-rs' default keeps 30 days of log).
2. **Compaction** (Delta OPTIMIZE): small files, such as one per partition rewrite or per
   lineage append, are merged per partition; rows do not change.
3. **Checkpoint**: the log state is written as Parquet, so opening the table reads one file
   instead of every commit.
4. **Vacuum**: data files no longer in the current version are deleted only if no *kept*
   version references them and they were removed at least `retention_hours` ago. Kept
   versions (`keep`): `lineage` = every version the lineage table records, as written or read;
   `outputs` = only the versions reproducing the recorded selections and mixtures needs (their
   lineage chains). Versions outside that set stop being readable by time travel.

The versions lineage records are read from the commits themselves (each stage commit's
`grasp.lineage`, grasp_pipeline/infra/commits.py), and from the `lineage` index for versions whose
commit file the log no longer keeps.

Maintenance commits change no rows; each carries its own `grasp.lineage` (asset `maintenance`
unless a `commits.recording` block names the writer, read from the version before it) and is
then indexed, so provenance walks through it, and `grasp lineage` never picks such a commit as
the version an output is "in" (lineage.MAINTENANCE_OPERATIONS). Every commit first passes the
root's writer lease (`commits.check_commit`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable

from ..config.params import MaintenanceParams
from ..infra import progress
from ..infra.commits import LINEAGE_KEY, check_commit, current_context
from ..infra.lineage import LINEAGE_TABLE, MAINTENANCE_OPERATIONS, OUTPUT_ID_COLUMNS, index_lineage, logged_versions
from ..infra.secrets import redact_values
from ..infra.storage import CONTRACT, DEFAULT_DELETED_FILE_RETENTION_DAYS, DeltaStore, retention_properties

KEEP_CHOICES = ("lineage", "outputs")


@dataclass(frozen=True)
class _Commit:
    """A table version a maintenance operation committed (what index_lineage indexes)."""

    table: str
    version: int


@dataclass
class TableReport:
    """What maintenance did to one table."""

    table: str
    version_before: int
    version_after: int
    files_before: int  # data files of the current version
    files_after: int
    properties_set: dict[str, str] = field(default_factory=dict)
    compacted: int = 0  # files merged away
    checkpoint: bool = False
    kept_versions: list[int] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)  # data files deleted (or, in a dry run, deletable)


def table_names(store: DeltaStore) -> list[str]:
    """Every Delta table under the root that this project knows of: the contract's tables, the
    lineage table, any table the lineage names, and (local roots) any folder with a Delta log."""
    names = set(CONTRACT) | {LINEAGE_TABLE}
    if store.exists(LINEAGE_TABLE):
        log = store.read(LINEAGE_TABLE)
        names |= set(log["table"].to_list())
        names |= {t for reads in log["reads"].to_list() for t in json.loads(reads or "{}")}
    if store.is_local:
        names |= {p.parent.name for p in Path(store.root).glob("*/_delta_log")}
    return sorted(n for n in names if store.exists(n))


def recorded_reads(store: DeltaStore, tables) -> dict[tuple[str, int], dict[str, int]]:
    """Returns {(table, version): {table read: version}} of every version lineage records: from the
    `grasp.lineage` of each commit the tables' logs keep, then from the `lineage` index for the
    versions no kept commit records (their commit file is gone, or they were recorded before
    lineage moved into the commits)."""
    reads_of: dict[tuple[str, int], dict[str, int]] = {}
    for table in tables:
        for version in logged_versions(store, table):
            record = (store.commit_info(table, version) or {}).get(LINEAGE_KEY)
            if record is not None:
                reads_of[(table, version)] = {t: int(v) for t, v in record.get("reads", {}).items()}
    if store.exists(LINEAGE_TABLE):
        for table, version, reads in store.read(LINEAGE_TABLE).select("table", "version", "reads").iter_rows():
            if (table, int(version)) not in reads_of:
                reads_of[(table, int(version))] = {t: int(v) for t, v in json.loads(reads or "{}").items()}
    return reads_of


def kept_versions(store: DeltaStore, keep: str = "lineage") -> dict[str, set[int]]:
    """Returns {table: versions vacuum must keep readable} from the recorded lineage (see module docstring)."""
    if keep not in KEEP_CHOICES:
        raise ValueError(f"maintenance.keep must be one of {KEEP_CHOICES}, got {keep!r}")
    reads_of = recorded_reads(store, [t for t in table_names(store) if t != LINEAGE_TABLE])
    if keep == "lineage":
        frontier = list(reads_of)
    else:
        frontier = [key for key in reads_of if key[0] in OUTPUT_ID_COLUMNS]
    kept: dict[str, set[int]] = {}
    seen = set()
    while frontier:  # the versions themselves and, transitively, everything they read
        key = frontier.pop()
        if key in seen:
            continue
        seen.add(key)
        kept.setdefault(key[0], set()).add(key[1])
        frontier += list(reads_of.get(key, {}).items())
    return kept


def maintain(store: DeltaStore, params: MaintenanceParams = MaintenanceParams()) -> list[TableReport]:
    """Maintains every table (or `params.tables`); returns one TableReport per table.

    The lineage table goes last: maintenance indexes its own commits first.
    """
    known = table_names(store)
    tables = list(params.tables) or known
    unknown = sorted(set(tables) - set(known))
    if unknown:
        raise ValueError(f"maintenance.tables: no Delta table {unknown} under {store.root} (tables: {known})")
    kept = kept_versions(store, params.keep)
    data_tables = [t for t in tables if t != LINEAGE_TABLE]
    reports = []
    with progress.task("maintaining", total=len(tables), unit="table") as done:
        for table in data_tables:
            reports.append(maintain_table(store, table, params, kept.get(table, set())))
            done.advance()
        if not params.dry_run:
            _index_maintenance(store, reports)
        if LINEAGE_TABLE in tables:
            reports.append(maintain_table(store, LINEAGE_TABLE, params, set()))
            done.advance()
    return reports


def maintain_table(store: DeltaStore, table: str, params: MaintenanceParams, keep: set[int]) -> TableReport:
    """Retention properties, compaction, checkpoint and vacuum of one table (nothing changes in a dry run)."""
    dt = _open(store, table)
    report = TableReport(table, dt.version(), dt.version(), len(dt.file_uris()), len(dt.file_uris()))
    commit = _commit_properties(store, table, report.version_before, params)
    wanted = retention_properties(params.log_retention_days, DEFAULT_DELETED_FILE_RETENTION_DAYS)
    current = dt.metadata().configuration
    report.properties_set = {k: v for k, v in wanted.items() if current.get(k) != v}
    if report.properties_set and not params.dry_run:
        check_commit(store.root)
        dt.alter.set_table_properties(report.properties_set, commit_properties=commit)
    if params.compact and not params.dry_run:
        check_commit(store.root)
        metrics = _open(store, table).optimize.compact(target_size=params.target_file_mb << 20,
                                                        commit_properties=commit)
        report.compacted = int(metrics["numFilesRemoved"]) - int(metrics["numFilesAdded"])
    dt = _open(store, table)
    if params.checkpoint and not params.dry_run:
        dt.create_checkpoint()
        report.checkpoint = True
    if params.vacuum:
        report.kept_versions = sorted(v for v in keep if v <= dt.version())
        if not params.dry_run:
            check_commit(store.root)
        report.vacuumed = dt.vacuum(retention_hours=params.retention_hours, dry_run=params.dry_run,
                                    enforce_retention_duration=False, keep_versions=report.kept_versions,
                                    commit_properties=commit)
    dt = _open(store, table)
    report.version_after, report.files_after = dt.version(), len(dt.file_uris())
    return report


def _commit_properties(store: DeltaStore, table: str, version_before: int,
                       params: MaintenanceParams) -> CommitProperties:
    """The metadata of every maintenance commit to `table`: its lineage (`grasp.lineage`: the writer,
    read from `version_before`, the maintenance parameters) and a `grasp.maintenance` marker."""
    writer = current_context("maintenance")
    lineage = {**writer, "table": table, "reads": {table: version_before},
               "params": writer["params"] or redact_values(dataclasses.asdict(params)),
               "facts": {"maintenance_of": f"{table}@{version_before}"}, "recorded_at": time.time()}
    return CommitProperties(custom_metadata={"grasp.maintenance": "true",
                                             LINEAGE_KEY: json.dumps(lineage, sort_keys=True, default=str)})


def _open(store: DeltaStore, table: str) -> DeltaTable:
    return DeltaTable(store.uri(table), storage_options=store.storage_options or None)


def _index_maintenance(store: DeltaStore, reports: list[TableReport]) -> None:
    """Indexes (lineage table) the maintenance commits of every report; their lineage is in the commits."""
    commits = []
    for report in reports:
        if report.version_after == report.version_before:
            continue
        operations = logged_versions(store, report.table)
        commits += [_Commit(report.table, v) for v in range(report.version_before + 1, report.version_after + 1)
                    if operations.get(v) in MAINTENANCE_OPERATIONS]
    index_lineage(store, commits)


def format_reports(reports: list[TableReport], dry_run: bool = False) -> pl.DataFrame:
    """One row per table: versions, files before/after, compacted, vacuumed, kept versions."""
    return pl.DataFrame([{
        "table": r.table, "version": f"{r.version_before}→{r.version_after}",
        "files": f"{r.files_before}→{r.files_after}", "compacted": r.compacted,
        ("deletable" if dry_run else "vacuumed"): len(r.vacuumed), "kept_versions": len(r.kept_versions),
        "properties_set": len(r.properties_set)} for r in reports])

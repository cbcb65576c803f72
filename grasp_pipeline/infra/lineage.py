"""Lineage: which table versions, runs and parameters produced each table version.

The record itself is in the Delta commit of the table version (`commits`: every stage
commit carries a `grasp.lineage` object), so a version and its provenance cannot part.
The `lineage` Delta table is an index of those records, one row per table version a stage
wrote, appended after the stage (`index_lineage`) and rebuildable from the commits at any
time (`rebuild_lineage_index`); readers prefer the commit, and use the index only for
versions whose commit file the log no longer keeps. Walking `reads` backwards from a
selection or mixture gives its full provenance, down to the corpus content hash; re-running the
stage from it is `grasp_pipeline.ops.reproduce` (above the stages, so this module needs none).
"""

from __future__ import annotations

import json

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError

from .commits import LINEAGE_KEY
from .storage import CONTRACT, DeltaStore, TableLogError

LINEAGE_TABLE = "lineage"
LINEAGE_SCHEMA = {"table": pl.Utf8, "version": pl.Int64, "asset": pl.Utf8, "dagster_run_id": pl.Utf8,
                  "mlflow_run_id": pl.Utf8, "code_version": pl.Utf8, "reads": pl.Utf8, "params": pl.Utf8,
                  "facts": pl.Utf8, "recorded_at": pl.Float64}


def _index_row(table: str, version: int, record: dict) -> dict:
    return {"table": table, "version": version, "asset": record.get("asset", ""),
            "dagster_run_id": record.get("dagster_run_id", ""), "mlflow_run_id": record.get("mlflow_run_id", ""),
            "code_version": record.get("code_version", ""),
            "reads": json.dumps(record.get("reads", {}), sort_keys=True),
            "params": json.dumps(record.get("params", {}), sort_keys=True, default=str),
            "facts": json.dumps(record.get("facts", {}), sort_keys=True, default=str),
            "recorded_at": float(record.get("recorded_at", 0.0))}


def index_lineage(store: DeltaStore, writes) -> int:
    """Appends one `lineage` index row per (table, version) written, copied from its commit's
    lineage (one transaction); returns the rows appended (versions without lineage are skipped)."""
    rows = []
    for w in writes:
        record = (store.commit_info(w.table, w.version) or {}).get(LINEAGE_KEY)
        if record is not None:
            rows.append(_index_row(w.table, w.version, record))
    if rows:
        write_deltalake(store.uri(LINEAGE_TABLE), pl.DataFrame(rows, schema=LINEAGE_SCHEMA).to_arrow(),
                        mode="append", storage_options=store.storage_options or None,
                        configuration=store.table_properties())
    return len(rows)


def rebuild_lineage_index(store: DeltaStore, tables=None) -> int:
    """Rewrites the `lineage` table from the lineage in every commit of `tables` (default: every
    table of the contract) that the logs still keep; returns the number of rows."""
    rows = [_index_row(table, version, record)
            for table in sorted(tables or CONTRACT) for version in sorted(logged_versions(store, table))
            if (record := (store.commit_info(table, version) or {}).get(LINEAGE_KEY)) is not None]
    write_deltalake(store.uri(LINEAGE_TABLE), pl.DataFrame(rows, schema=LINEAGE_SCHEMA).to_arrow(),
                    mode="overwrite", storage_options=store.storage_options or None,
                    configuration=store.table_properties())
    return len(rows)


def lineage_of(store: DeltaStore, table: str, version: int) -> dict | None:
    """The lineage record of `table`@`version` (asset, runs, code version, reads, params, facts): from
    its Delta commit, else from the `lineage` index; None when neither has one."""
    record = (store.commit_info(table, version) or {}).get(LINEAGE_KEY)
    if record is not None:
        return {"table": table, "version": version, "asset": record.get("asset", ""),
                "dagster_run_id": record.get("dagster_run_id", ""), "mlflow_run_id": record.get("mlflow_run_id", ""),
                "code_version": record.get("code_version", ""), "reads": record.get("reads", {}),
                "params": record.get("params", {}), "facts": record.get("facts", {}),
                "recorded_at": record.get("recorded_at", 0.0)}
    if not store.exists(LINEAGE_TABLE):
        return None
    found = store.read(LINEAGE_TABLE).filter((pl.col("table") == table) & (pl.col("version") == version))
    return _parsed(found.sort("recorded_at").row(-1, named=True)) if found.height else None


def unreadable_tables(store: DeltaStore, tables=None) -> dict[str, str]:
    """{table: why} of every table among `tables` (default: the contract's) that exists but whose Delta
    log cannot be read (a truncated or corrupted commit file)."""
    found = {}
    for table in sorted(tables or CONTRACT):
        try:
            store.version(table)  # opens the log (None for a table not written yet)
        except (TableLogError, DeltaError) as error:
            found[table] = str(error).strip().splitlines()[0]
    return found


def check_tables_readable(store: DeltaStore, tables=None) -> None:
    """Raises TableLogError naming every damaged table before anything is written: a run that reads
    one would otherwise recompute and commit the tables before it, then fail at it."""
    damaged = unreadable_tables(store, tables)
    if damaged:
        first, *others = damaged
        also = f" (also damaged: {', '.join(others)})" if others else ""
        raise TableLogError(f"{damaged[first]}{also}")


def commits_by_runs(store: DeltaStore, dagster_run_ids, tables=None, depth: int = 40) -> list[tuple[str, int]]:
    """The (table, version)s that the given Dagster runs committed, among each table's last `depth`
    versions, sorted by table: what a failed `grasp run` did change. Tables whose log cannot be read are
    left out (unreadable_tables names them)."""
    wanted, found = set(dagster_run_ids), []
    damaged = unreadable_tables(store, tables)
    for table in sorted(set(tables or CONTRACT) - set(damaged)):
        for version in sorted(logged_versions(store, table), reverse=True)[:depth]:
            record = (store.commit_info(table, version) or {}).get(LINEAGE_KEY) or {}
            if record.get("dagster_run_id") in wanted:
                found.append((table, version))
    return found


# ---------------------------------------------------------------- finding, explaining, reproducing

# The outputs a user asks about: table -> the column holding the output's id.
OUTPUT_ID_COLUMNS = {"curated_selections": "selection_id", "mixture_weights": "mixture_id"}


class LineageError(ValueError):
    """The id, version or lineage a command needs is not there; the message says what to do."""


# Commits that change no rows (maintenance: grasp_pipeline/ops/maintenance.py): never the version an output is "in"
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "SET TBLPROPERTIES", "VACUUM START", "VACUUM END"})


def logged_versions(store: DeltaStore, table: str) -> dict[int, str]:
    """Returns {version: Delta operation} of every version the table's log still lists, maintenance
    commits included ({} for a missing table)."""
    if not store.exists(table):
        return {}
    history = DeltaTable(store.uri(table), storage_options=store.storage_options or None).history()
    return {int(entry["version"]): entry.get("operation", "") for entry in history if "version" in entry}


def table_versions(store: DeltaStore, table: str) -> list[int]:
    """Returns the table's versions that Delta's log still lists and that changed data, newest first."""
    return sorted((v for v, operation in logged_versions(store, table).items()
                   if operation not in MAINTENANCE_OPERATIONS), reverse=True)


def find_output(store: DeltaStore, output_id: str, version: int | None = None,
                table: str | None = None) -> tuple[str, int]:
    """Returns (table, version) of the newest table version that holds `output_id`.

    Looks through `curated_selections` (selection ids), then `mixture_weights` (mixture ids),
    reading each version through Delta time travel, newest first. `table` restricts the search
    to one of them (a selection and a mixture made from one surrogate by the same method share
    an id, e.g. `sg-…-grasp`); `version` to that table version.
    """
    found = find_outputs(store, output_id, version, [table] if table else None)
    if found:
        return found[0]
    known = {}
    for name, column in OUTPUT_ID_COLUMNS.items():
        if store.exists(name) and (table is None or name == table):
            known[name] = sorted(store.read(name)[column].unique().to_list())
    hint = "; ".join(f"the latest {t} holds {', '.join(ids[:12])}" for t, ids in known.items() if ids) or \
        "no curated_selections or mixture_weights table under this root"
    where = f" at version {version}" if version is not None else ""
    raise LineageError(f"no selection or mixture with id {output_id!r}{where} under {store.root} ({hint})")


def find_outputs(store: DeltaStore, output_id: str, version: int | None = None,
                 tables: list[str] | None = None) -> list[tuple[str, int]]:
    """Every output table's newest version holding `output_id`: [(table, version)], selections first."""
    found = []
    for table in tables or list(OUTPUT_ID_COLUMNS):
        if table not in OUTPUT_ID_COLUMNS:
            raise LineageError(f"{table!r} is not an output table; choose one of {sorted(OUTPUT_ID_COLUMNS)}")
        column = OUTPUT_ID_COLUMNS[table]
        versions = table_versions(store, table)
        if version is not None:
            versions = [v for v in versions if v == version]
        for v in versions:
            try:
                ids = pl.read_delta(store.uri(table), version=v, columns=[column],
                                    storage_options=store.storage_options or None)[column]
            except Exception:  # a version whose files were vacuumed cannot be read: skip it
                continue
            if (ids == output_id).any():
                found.append((table, v))
                break
    return found


def _parsed(row: dict) -> dict:
    return {**row, "reads": json.loads(row["reads"] or "{}"), "params": json.loads(row["params"] or "{}"),
            "facts": json.loads(row["facts"] or "{}")}


def provenance(store: DeltaStore, table: str, version: int) -> dict:
    """The lineage of `table`@`version` as one JSON-able dict.

    `chain` holds one entry per table version in the provenance, the asked-for one first, then
    upstream in breadth-first order (each with its asset, Dagster run, MLflow run, code version,
    the versions it read, its parameters and facts; from the versions' commits); `missing` lists
    table versions that were read but have no lineage (written by hand, or before it was recorded);
    `model_version` and `corpus_content_sha1` are the reference model and corpus of the chain.
    """
    chain, missing, seen, frontier = [], [], set(), [(table, version)]
    while frontier:
        key, frontier = frontier[0], frontier[1:]
        if key in seen:
            continue
        seen.add(key)
        row = lineage_of(store, *key)
        if row is None:
            missing.append({"table": key[0], "version": key[1]})
            continue
        chain.append(row)
        frontier += sorted(row["reads"].items())
    if not chain:
        raise LineageError(f"no lineage recorded for {table}@{version}; it was written before lineage was "
                           "recorded (rematerialise it)")
    facts = {}
    for row in reversed(chain):  # the nearest upstream fact wins
        facts.update(row["facts"])
    return {"table": table, "version": version, "asset": chain[0]["asset"],
            "model_version": facts.get("model_version"), "corpus_content_sha1": facts.get("corpus_content_sha1"),
            "surrogate_id": facts.get("surrogate_id"), "chain": chain, "missing": missing}


def lineage_summary(store: DeltaStore, table: str, version: int) -> dict:
    """A compact lineage for materialisation metadata: reads, the runs behind them, model and corpus."""
    found = provenance(store, table, version)
    return {"reads": found["chain"][0]["reads"],
            "upstream": {f"{r['table']}@{r['version']}": {"asset": r["asset"], "dagster_run_id": r["dagster_run_id"],
                                                         "mlflow_run_id": r["mlflow_run_id"],
                                                         "code_version": r["code_version"]}
                         for r in found["chain"][1:]},
            "model_version": found["model_version"], "corpus_content_sha1": found["corpus_content_sha1"]}


def format_provenance(found: dict) -> str:
    """Human-readable lineage, one block per table version."""
    lines = [f"{found['table']}@{found['version']} (asset {found['asset']})",
             f"  reference model: {found['model_version'] or '-'}",
             f"  corpus content sha1: {found['corpus_content_sha1'] or '-'}", ""]
    for row in found["chain"]:
        reads = ", ".join(f"{t}@{v}" for t, v in sorted(row["reads"].items())) or "(external input only)"
        lines += [f"{row['table']}@{row['version']}  asset={row['asset']}  code_version={row['code_version'] or '-'}",
                  f"    dagster run: {row['dagster_run_id'] or '-'}",
                  f"    mlflow run:  {row['mlflow_run_id'] or '-'}",
                  f"    read:        {reads}"]
        if row["facts"]:
            lines.append("    facts:       " + ", ".join(f"{k}={v}" for k, v in sorted(row["facts"].items())))
        if row["params"] and row is found["chain"][0]:  # upstream parameters: in --json
            lines.append("    params:      " + json.dumps(row["params"], sort_keys=True))
    for item in found["missing"]:
        lines.append(f"{item['table']}@{item['version']}  (no lineage recorded)")
    return "\n".join(lines)

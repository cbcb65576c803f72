"""Delta Lake storage: one table per asset under one root, with the DESIGN §5 contract.

Writes go through `deltalake.write_deltalake`, so every write is one transaction: a crash
mid-write leaves the previous table version. A full write replaces the table; a partition
write replaces exactly the partitions present in the frame (a predicate overwrite) and
keeps the others, so rerunning a shard or a retraining batch never duplicates rows; given the
current partition keys, it also removes the stale ones (another corpus's) in that commit.
Frames are checked against the contract before anything is written.

The root is a local folder or an object-store URI (`s3://bucket/prefix`, also `gs://`,
`az://`). Object-store credentials and endpoints come only from environment variables
(`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...; only those `STORAGE_ENV` lists), are passed to
deltalake and polars as storage options, and never appear in reprs, errors or metadata. Concurrent writers are
safe: delta-rs commits with put-if-absent (local rename-if-absent, S3 `If-None-Match`
conditional writes, which AWS S3, MinIO and moto enforce), and a writer that loses a
commit race re-checks for conflicts and retries.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from .commits import LINEAGE_KEY, WRITE_ID_KEY, check_commit, current_context, frame_facts

# One file of a stored state dict (grasp_pipeline/infra/checkpoint_files.py): the step it was taken at, its
# path relative to the storage root, its sha256 (hex), size in bytes and the tensors it holds (in order).
FILE_ENTRY = pl.Struct({"step": pl.Int64, "file": pl.Utf8, "sha256": pl.Utf8, "bytes": pl.Int64,
                        "tensors": pl.List(pl.Utf8)})

# The table contract (DESIGN §5): required columns and their types; more columns are allowed.
CONTRACT: dict[str, dict[str, pl.DataType]] = {
    "corpus_shards": {"example_id": pl.Int64, "shard": pl.Utf8, "domain": pl.Utf8, "text": pl.Utf8,
                      "n_bytes": pl.Int64, "source": pl.Utf8, "content_sha1": pl.Utf8},
    "corpus_sources": {"domain": pl.Utf8, "source": pl.Utf8, "documents": pl.Int64, "examples": pl.Int64,
                       "bytes": pl.Int64},
    "task_sets": {"task": pl.Utf8, "example_id": pl.Int64, "domain": pl.Utf8, "text": pl.Utf8, "split": pl.Utf8},
    "reference_models": {"model_version": pl.Utf8, "path": pl.Utf8, "workload": pl.Utf8,
                         "parameters": pl.Int64, "warmup_loss": pl.Float64, "state": pl.List(FILE_ENTRY),
                         "checkpoints": pl.List(FILE_ENTRY)},
    "gradient_sketches": {"example_id": pl.Int64, "shard": pl.Utf8, "sketch": pl.List(pl.Float32),
                          "grad_norm": pl.Float64, "loss": pl.Float64, "sketch_config": pl.Utf8,
                          "model_version": pl.Utf8},
    "task_sketches": {"task": pl.Utf8, "sketch": pl.List(pl.Float32), "loss": pl.Float64,
                      "sketch_config": pl.Utf8, "model_version": pl.Utf8},
    "subset_plan": {"subset_id": pl.Int64, "role": pl.Utf8, "sampler": pl.Utf8, "size": pl.Int64,
                    "seed": pl.Int64, "members": pl.List(pl.Int64)},
    "subset_outcomes": {"subset_id": pl.Int64, "task": pl.Utf8, "loss": pl.Float64, "utility": pl.Float64,
                        "repeat": pl.Int64, "steps": pl.Int64, "seconds": pl.Float64},
    "surrogates": {"surrogate_id": pl.Utf8, "method": pl.Utf8, "task": pl.Utf8, "params": pl.Utf8,
                   "config": pl.Utf8, "cv_mean": pl.Float64, "cv_lcb": pl.Float64,
                   "holdout_spearman": pl.Float64, "holdout_pearson": pl.Float64, "mlflow_run_id": pl.Utf8},
    "surrogate_candidates": {"surrogate_id": pl.Utf8, "method": pl.Utf8, "candidate": pl.Int64,
                             "config": pl.Utf8, "cv_mean": pl.Float64, "cv_sd": pl.Float64,
                             "cv_lcb": pl.Float64, "chosen": pl.Boolean},
    "fidelity_report": {"surrogate_id": pl.Utf8, "method": pl.Utf8, "sampler": pl.Utf8, "fit_subsets": pl.Int64,
                        "draws": pl.Int64, "holdout_spearman": pl.Float64, "holdout_spearman_min": pl.Float64,
                        "holdout_spearman_max": pl.Float64, "holdout_pearson": pl.Float64,
                        "noise_ceiling": pl.Float64, "artifact_seconds": pl.Float64},
    "surrogate_predictions": {"surrogate_id": pl.Utf8, "method": pl.Utf8, "subset_id": pl.Int64,
                              "task": pl.Utf8, "role": pl.Utf8, "predicted": pl.Float64, "actual": pl.Float64},
    "curated_selections": {"selection_id": pl.Utf8, "method": pl.Utf8, "example_id": pl.Int64,
                           "rank": pl.Int64, "gain": pl.Float64, "domain": pl.Utf8, "budget": pl.Int64},
    "mixture_weights": {"mixture_id": pl.Utf8, "method": pl.Utf8, "domain": pl.Utf8,
                        "weight": pl.Float64, "predicted_utility": pl.Float64},
    "mixture_updates": {"mixture_id": pl.Utf8, "method": pl.Utf8, "domain": pl.Utf8, "weight": pl.Float64,
                        "predicted_utility": pl.Float64, "budget": pl.Int64, "new_domains": pl.List(pl.Utf8),
                        "revised_domains": pl.List(pl.Utf8), "sketched_examples": pl.Int64, "seconds": pl.Float64},
    "selection_validation": {"selection_id": pl.Utf8, "method": pl.Utf8, "task": pl.Utf8,
                             "utility": pl.Float64, "budget": pl.Int64},
    "curation_test": {"selection_id": pl.Utf8, "method": pl.Utf8, "task": pl.Utf8, "utility": pl.Float64,
                      "gain_vs_reference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
                      "reference": pl.Utf8, "seeds": pl.Int64},
    "curation_rounds": {"candidate_id": pl.Utf8, "kind": pl.Utf8, "proposer": pl.Utf8, "round": pl.Int64,
                        "predicted_gain": pl.Float64, "realised_gain": pl.Float64, "lcb": pl.Float64,
                        "chosen": pl.Boolean, "pick_after_rounds": pl.List(pl.Int64)},
    "active_outcomes": {"subset_id": pl.Int64, "sampler": pl.Utf8, "role": pl.Utf8, "members": pl.List(pl.Int64),
                        "task": pl.Utf8, "utility": pl.Float64, "recipe": pl.Utf8, "model_version": pl.Utf8},
    "target_check_summary": {"figure": pl.Utf8, "value": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64},
    "target_check": {"candidate": pl.Utf8, "kind": pl.Utf8, "level": pl.Utf8, "utility": pl.Float64},
    "curation_test_dirt": {"selection_id": pl.Utf8, "method": pl.Utf8, "kind": pl.Utf8, "share": pl.Float64,
                           "random_share": pl.Float64},
    **{table: {"split": pl.Utf8, "kind": pl.Utf8, "method": pl.Utf8, "reference": pl.Utf8, "gain": pl.Float64,
               "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64, "candidates": pl.Int64,
               "dev_retrainings": pl.Int64}
       for table in ("curation_test_verdict", "validation_verdict")},
}

# Tables written partition by partition (DESIGN §4: shards and retraining batches).
PARTITION_COLUMNS = {"corpus_shards": ["shard"], "gradient_sketches": ["shard"], "subset_outcomes": ["batch"]}


class ContractError(ValueError):
    """A frame does not match the table contract; nothing was written."""


class TableLogError(RuntimeError):
    """A table's Delta log is missing or unreadable; nothing was written."""


# Environment variables handed to deltalake/polars/obstore as storage options for object-store
# roots, per scheme: only these (the object_store crate's names), never "every AWS_* variable"
# a shell happens to hold. Values are secrets: never print or log them.
STORAGE_ENV = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ALLOW_HTTP", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
           "AWS_SKIP_SIGNATURE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_IMDSV1_FALLBACK",
           "AWS_METADATA_ENDPOINT", "AWS_REQUEST_PAYER"),
    "gs": ("GOOGLE_SERVICE_ACCOUNT", "GOOGLE_SERVICE_ACCOUNT_PATH", "GOOGLE_SERVICE_ACCOUNT_KEY",
           "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_BUCKET"),
    "az": ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_KEY", "AZURE_CLIENT_ID",
           "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_STORAGE_USE_EMULATOR", "AZURE_STORAGE_ENDPOINT",
           "AZURE_USE_AZURE_CLI"),
}
STORAGE_ENV.update({"s3a": STORAGE_ENV["s3"], "gcs": STORAGE_ENV["gs"], "abfs": STORAGE_ENV["az"],
                    "abfss": STORAGE_ENV["az"], "azure": STORAGE_ENV["az"]})
# Variables that turn off safe concurrent commits (delta-rs reads them from the environment on its
# own, so not forwarding them is not enough): refused unless GRASP_ALLOW_UNSAFE_STORAGE=true.
UNSAFE_STORAGE_ENV = ("AWS_S3_ALLOW_UNSAFE_RENAME",)
ALLOW_UNSAFE_STORAGE = "GRASP_ALLOW_UNSAFE_STORAGE"


class StorageSettingError(ValueError):
    """An object-store setting in the environment is unsafe; nothing was read or written."""


# History kept by every table this store creates (Delta table properties): the log long enough for
# `grasp lineage --reproduce` to time-travel to any recorded version (delta-rs otherwise drops log
# entries older than 30 days at checkpoints), removed files a week for readers of recent versions.
# `grasp maintain` applies the same to existing tables (grasp_pipeline/ops/maintenance.py).
DEFAULT_LOG_RETENTION_DAYS = 3650
DEFAULT_DELETED_FILE_RETENTION_DAYS = 7


def retention_properties(log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS,
                         deleted_file_retention_days: int = DEFAULT_DELETED_FILE_RETENTION_DAYS) -> dict[str, str]:
    """The Delta table properties that set how long history is kept."""
    return {"delta.logRetentionDuration": f"interval {int(log_retention_days)} days",
            "delta.deletedFileRetentionDuration": f"interval {int(deleted_file_retention_days)} days"}


# Commit retries when concurrent writers race for the same table version (delta-rs already
# retries non-conflicting commits internally; this covers a concurrent *create*).
WRITE_ATTEMPTS = 5


def storage_options_from_env(root: str, environ=os.environ) -> dict[str, str]:
    """Returns the object-store settings for `root` from environment variables ({} for a local root).

    Only the variables `STORAGE_ENV` lists for the root's scheme are forwarded. An unsafe one
    (`UNSAFE_STORAGE_ENV`) set to anything but false is a StorageSettingError unless
    GRASP_ALLOW_UNSAFE_STORAGE=true says it is meant.
    """
    if "://" not in root or root.startswith("file://"):
        return {}
    scheme = root.split("://", 1)[0].lower()
    unsafe = [k for k in UNSAFE_STORAGE_ENV if environ.get(k, "false").strip().lower() not in ("", "false", "0")]
    if unsafe and environ.get(ALLOW_UNSAFE_STORAGE, "").strip().lower() != "true":
        raise StorageSettingError(
            f"{', '.join(unsafe)} is set in the environment: it lets two writers commit the same Delta version "
            f"(silent data loss). This store commits safely without it (put-if-absent); unset it, or set "
            f"{ALLOW_UNSAFE_STORAGE}=true to accept the risk")
    allowed = set(STORAGE_ENV.get(scheme, ())) | (set(unsafe) if unsafe else set())
    return {k: v for k, v in environ.items() if k in allowed}


def check_contract(table: str, frame: pl.DataFrame) -> None:
    """Raises ContractError naming the table and column if `frame` breaks the contract."""
    expected = CONTRACT[table]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise ContractError(f"table {table!r}: missing required column(s) {missing}")
    for column, dtype in expected.items():
        if frame.schema[column] != dtype:
            raise ContractError(f"table {table!r}: column {column!r} has type {frame.schema[column]}, "
                                f"the contract requires {dtype}")
    for column in PARTITION_COLUMNS.get(table, []):
        if column not in frame.columns or frame.schema[column] != pl.Utf8:
            raise ContractError(f"table {table!r}: partition column {column!r} must be present and of type "
                                f"{pl.Utf8}")
        values = frame[column]
        if values.null_count() or values.str.contains(r"\s").any():
            raise ContractError(f"table {table!r}: partition column {column!r} must be non-null "
                                "strings without spaces")


@dataclass
class DeltaStore:
    """The storage root: `<root>/<table>` is a Delta table (local path or object-store URI).

    For an object-store root without explicit `storage_options`, they are read from the
    environment (see `storage_options_from_env`).
    """

    root: str
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    log_retention_days: int = DEFAULT_LOG_RETENTION_DAYS  # of the tables this store creates

    def __post_init__(self):
        if "://" not in self.root:
            self.root = str(Path(self.root).expanduser().resolve())
            os.makedirs(self.root, exist_ok=True)
        elif not self.storage_options:
            self.storage_options = storage_options_from_env(self.root)

    @property
    def is_local(self) -> bool:
        return "://" not in self.root

    def uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def table_properties(self) -> dict[str, str]:
        """The properties a table gets when this store creates it (deltalake ignores them on later writes)."""
        return retention_properties(self.log_retention_days)

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self._options())

    def _table(self, table: str) -> DeltaTable:
        """Opens the table; a missing or unreadable Delta log is a TableLogError naming it."""
        try:
            return DeltaTable(self.uri(table), storage_options=self._options())
        except TableNotFoundError:
            raise self._missing(table) from None
        except DeltaError as error:
            raise self._log_error(table, error) from None

    def _missing(self, table: str) -> Exception:
        """The error for reading a table that has no Delta log."""
        if self.is_local and Path(self.uri(table)).is_dir() and any(Path(self.uri(table)).iterdir()):
            return TableLogError(
                f"Delta table {table!r} at {self.uri(table)}: the folder holds files but no Delta log "
                "(_delta_log is missing). Either the first write to it was interrupted before it committed "
                "(nothing was lost: rematerialise the asset; the orphan files stay unreferenced), or _delta_log "
                "was deleted (restore it from a backup before anything writes here: a write starts a new table)")
        return FileNotFoundError(f"Delta table {table!r} not found under {self.root}; materialise its asset first")

    def _log_error(self, table: str, error: Exception) -> TableLogError:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return TableLogError(
            f"Delta table {table!r} at {self.uri(table)}: its Delta log (_delta_log) cannot be read ({reason}); "
            "nothing was written. Restore the damaged commit file from a backup, or move the table folder away "
            "and rematerialise the asset")

    def version(self, table: str) -> int | None:
        """Returns the table's current version, or None if it has no Delta log (yet)."""
        if not self.exists(table):
            return None
        return self._table(table).version()

    def write(self, table: str, frame: pl.DataFrame, lineage: dict | None = None) -> int:
        """Replaces the whole table with `frame` in one transaction (recording `lineage` in the same
        commit); returns the new version."""
        check_contract(table, frame)
        self.version(table)  # refuses a table whose log is damaged (instead of writing over it)
        return self._commit(table, frame, lineage, mode="overwrite", schema_mode="overwrite",
                            partition_by=PARTITION_COLUMNS.get(table))

    def write_partitions(self, table: str, frame: pl.DataFrame, lineage: dict | None = None,
                         current: list[str] | None = None) -> int:
        """Replaces exactly the partitions present in `frame`, keeping all others.

        Returns the version this write committed. The overwrite predicate names the partition
        values, so rerunning one shard or batch rewrites only it (idempotent), in one
        transaction; concurrent writers of other partitions (other processes or machines)
        do not lose each other's rows. `current` (every partition the table may hold now, e.g. the
        shards corpus_shards holds) also removes, in the same commit, the partitions outside it: those
        of a corpus the root held before, which would otherwise sit beside the new ones (mixed tables).
        """
        check_contract(table, frame)
        (column,) = PARTITION_COLUMNS[table]
        if frame.is_empty():  # no partition to replace
            return self.version(table)
        values = sorted(frame[column].unique().to_list())
        predicate = f"{column} IN ({sql_strings(values)})"
        if current is not None and self.version(table) is not None:
            predicate += f" OR {column} NOT IN ({sql_strings(current)})"
            stale = sorted(set(self.partition_values(table, column)) - set(current))
            if stale and lineage is not None:  # the commit's lineage says which partitions it removed
                lineage = {**lineage, "facts": {**lineage.get("facts", {}), "removed_partitions": stale}}
        for attempt in range(WRITE_ATTEMPTS):
            try:
                if self.version(table) is None:
                    # the first writer creates the table; a concurrent creator makes this fail and retry
                    return self._commit(table, frame, lineage, mode="error", partition_by=[column])
                return self._commit(table, frame, lineage, mode="overwrite", predicate=predicate,
                                    partition_by=[column], schema_mode="merge")
            except (CommitFailedError, FileExistsError) as error:
                if attempt == WRITE_ATTEMPTS - 1:
                    raise RuntimeError(f"table {table!r}: partition write of {values} lost {WRITE_ATTEMPTS} "
                                       f"commit races to concurrent writers ({error})") from None
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
            except DeltaError as error:
                if "already exists" in str(error).lower() and attempt < WRITE_ATTEMPTS - 1:
                    time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                    continue
                raise

    def _commit(self, table: str, frame: pl.DataFrame, lineage: dict | None = None, **kwargs) -> int:
        """One write_deltalake transaction; returns the exact version it committed.

        `lineage` goes into the commit's metadata (`grasp.lineage`), so the table version and its
        provenance are one atomic commit. Other writers may commit right after this one, so the
        version is found by a write id in the commit's metadata, read from the commit files
        themselves (deltalake's history() can mislabel versions while writers race).
        """
        check_commit(self.root)
        write_id = uuid.uuid4().hex
        metadata = {WRITE_ID_KEY: write_id}
        if lineage is not None:
            metadata[LINEAGE_KEY] = json.dumps(lineage, sort_keys=True, default=str)
        write_deltalake(self.uri(table), frame.to_arrow(), storage_options=self._options(),
                        configuration=self.table_properties(),
                        commit_properties=CommitProperties(custom_metadata=metadata), **kwargs)
        latest = self._table(table).version()
        for version in range(latest, max(-1, latest - 50), -1):
            if (self.commit_info(table, version) or {}).get(WRITE_ID_KEY) == write_id:
                return version
        return latest  # more than 50 commits since ours: the latest is an upper bound

    def commit_info(self, table: str, version: int) -> dict | None:
        """Returns the grasp metadata of one commit ({"grasp.write_id", "grasp.lineage" (parsed)}),
        or None when the commit file is gone (log cleanup after a checkpoint) or unreadable."""
        commit = f"{self.uri(table)}/_delta_log/{version:020d}.json"
        schema = {"commitInfo": pl.Struct({WRITE_ID_KEY: pl.Utf8, LINEAGE_KEY: pl.Utf8})}
        try:
            infos = pl.read_ndjson(commit, schema=schema, storage_options=self._options())["commitInfo"]
        except Exception:  # no such commit file: the version predates the log's retention
            return None
        found = {}
        for key in (WRITE_ID_KEY, LINEAGE_KEY):
            values = infos.struct.field(key).drop_nulls()
            if len(values):
                found[key] = json.loads(values[0]) if key == LINEAGE_KEY else values[0]
        return found

    def read(self, table: str, version: int | None = None, columns: list[str] | None = None,
             where: dict[str, list[str]] | None = None) -> pl.DataFrame:
        """Returns the table (at `version`, default latest; only `columns`, default all) as a polars frame.

        `where` ({partition column: values}) keeps the rows of those partitions only, and reads only
        their files: the filter is pushed down to the partition values in the Delta log (a polars
        `scan_delta` filter), so a shard step does not open, let alone sort, the other shards.
        """
        if not self.exists(table):
            raise self._missing(table)
        try:
            if where is None:
                return pl.read_delta(self.uri(table), version=version, columns=columns,
                                     storage_options=self._options())
            not_partitions = sorted(set(where) - set(PARTITION_COLUMNS.get(table, [])))
            if not_partitions:
                raise ValueError(f"table {table!r} is not partitioned by {not_partitions} (its partition columns: "
                                 f"{PARTITION_COLUMNS.get(table, [])}); filter after reading instead")
            scan = pl.scan_delta(self.uri(table), version=version, storage_options=self._options())
            scan = scan.filter(pl.all_horizontal([pl.col(c).is_in(list(v)) for c, v in where.items()]))
            return (scan.select(columns) if columns else scan).collect()
        except DeltaError as error:
            raise self._log_error(table, error) from None

    def column_names(self, table: str, version: int | None = None) -> list[str]:
        """Returns the table's column names (at `version`, default latest), read from its Delta log alone."""
        return [f.name for f in (self._table(table) if version is None else DeltaTable(
            self.uri(table), version=version, storage_options=self._options())).schema().fields]

    def partition_values(self, table: str, column: str, version: int | None = None) -> list[str]:
        """Returns the sorted distinct values of a partition column, read from the Delta log alone."""
        if not self.exists(table):
            raise self._missing(table)
        try:
            found = DeltaTable(self.uri(table), version=version, storage_options=self._options()).partitions()
        except DeltaError as error:
            raise self._log_error(table, error) from None
        return sorted({p[column] for p in found})


class PinnedReads:
    """A DeltaStore view that reads each table at one version for a whole stage, and records
    lineage in every commit it makes.

    The version is the one current at the stage's first read of that table, so a stage
    never mixes two versions of an input, and `versions` records exactly what it read
    (its lineage). Each write carries, in the same Delta commit, the writer (`commits.recording`,
    else `asset`), the versions read so far, the frame's facts and the time. Everything else is
    delegated to the underlying store.
    """

    def __init__(self, store: DeltaStore, asset: str = ""):
        self.store = store
        self.versions: dict[str, int] = {}
        self.writer = current_context(asset)

    def _pinned(self, table: str) -> int:
        """The version this stage reads `table` at (the current one at its first read)."""
        if table not in self.versions:
            current = self.store.version(table)
            if current is None:
                raise self.store._missing(table)
            self.versions[table] = current
        return self.versions[table]

    def read(self, table: str, version: int | None = None, columns: list[str] | None = None,
             where: dict[str, list[str]] | None = None) -> pl.DataFrame:
        return self.store.read(table, version=self._pinned(table) if version is None else version,
                               columns=columns, where=where)

    def partition_values(self, table: str, column: str, version: int | None = None) -> list[str]:
        return self.store.partition_values(table, column, self._pinned(table) if version is None else version)

    def column_names(self, table: str, version: int | None = None) -> list[str]:
        return self.store.column_names(table, self._pinned(table) if version is None else version)

    def lineage(self, table: str, frame: pl.DataFrame) -> dict:
        """The lineage a commit of `frame` to `table` records."""
        facts = frame_facts(table, frame)
        if "corpus_content_sha1" in facts and self.store.version(table) is not None:
            # the root switches to another corpus: the commit says which one it replaces
            previous = (self.store.commit_info(table, self.store.version(table)) or {}).get(LINEAGE_KEY, {})
            replaced = previous.get("facts", {}).get("corpus_content_sha1")
            if replaced not in (None, facts["corpus_content_sha1"]):
                facts["replaced_corpus_content_sha1"] = replaced
        return {**self.writer, "table": table, "reads": {t: v for t, v in sorted(self.versions.items()) if t != table},
                "facts": facts, "recorded_at": time.time()}

    def write(self, table: str, frame: pl.DataFrame) -> int:
        return self.store.write(table, frame, lineage=self.lineage(table, frame))

    def write_partitions(self, table: str, frame: pl.DataFrame, current: list[str] | None = None) -> int:
        return self.store.write_partitions(table, frame, lineage=self.lineage(table, frame), current=current)

    def __getattr__(self, name):
        return getattr(self.store, name)


def sql_strings(values: list[str]) -> str:
    """`values` as a SQL list body of quoted strings (quotes doubled), for Delta predicates."""
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)

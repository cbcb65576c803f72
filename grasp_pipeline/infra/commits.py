"""What every Delta commit of a stage carries: its lineage, in the same commit as the data.

A stage's writes go through `storage.PinnedReads`, which puts a `grasp.lineage` JSON object
into each commit's metadata (Delta `commitInfo`): the asset, the Dagster and MLflow run ids,
the code version, the parameters, the table versions read so far and facts about the frame
(reference-model version, corpus content hash, build and surrogate ids). A table version
and its provenance are one atomic commit: no crash or tracking failure can part them.

Who is writing (asset, runs, parameters) is set for a block of code with `recording(...)`,
by the Dagster layer around each materialisation and by the CLI around `grasp select` /
`grasp mixture`; a stage called without it records its own function name as the asset.
Every commit under a root first runs the guard `guarded_commits` sets (the root's writer lease).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import polars as pl

from .secrets import redact_values

LINEAGE_KEY = "grasp.lineage"
WRITE_ID_KEY = "grasp.write_id"

_context: ContextVar[dict | None] = ContextVar("grasp_lineage_context", default=None)


@contextmanager
def recording(asset: str, *, dagster_run_id: str = "", mlflow_run_id: str = "", code_version: str = "",
              params: dict | None = None) -> Iterator[dict]:
    """Within the block, every stage commit records this writer in its lineage; yields the context."""
    context = {"asset": asset, "dagster_run_id": dagster_run_id, "mlflow_run_id": mlflow_run_id,
               "code_version": code_version, "params": redact_values(params or {})}
    token = _context.set(context)
    try:
        yield context
    finally:
        _context.reset(token)


def current_context(default_asset: str) -> dict:
    """The writer set by `recording`, else one naming only `default_asset` (a stage called directly)."""
    found = _context.get()
    return dict(found) if found is not None else {"asset": default_asset, "dagster_run_id": "", "mlflow_run_id": "",
                                                   "code_version": "", "params": {}}


def fingerprint(*parts) -> str:
    """A 12-hex-digit sha1 over JSON renderings of `parts` (bytes hashed as they are)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


# columns whose single value in a written frame is a fact of its lineage
FACT_COLUMNS = ("model_version", "surrogate_id", "build_id")


def frame_facts(table: str, frame: pl.DataFrame) -> dict:
    """Facts a commit of `frame` to `table` records: each FACT_COLUMNS column holding one value, and
    for the pool its content hash (`corpus_content_sha1`, over the sorted example hashes)."""
    facts = {}
    for column in FACT_COLUMNS:
        if column in frame.columns and frame[column].n_unique() == 1:
            facts[column] = frame[column][0]
    if table == "corpus_shards" and "content_sha1" in frame.columns:
        facts["corpus_content_sha1"] = fingerprint(sorted(frame["content_sha1"].to_list()))
    return facts


# Called with the root before every commit in its block (the root's writer lease checks it
# still holds the root): a commit the guard refuses is never attempted.
_commit_guard: ContextVar[Callable[[str], None] | None] = ContextVar("grasp_commit_guard", default=None)


@contextmanager
def guarded_commits(guard: Callable[[str], None]) -> Iterator[None]:
    """Within the block, `guard(root)` runs before each commit and may raise to stop it."""
    token = _commit_guard.set(guard)
    try:
        yield
    finally:
        _commit_guard.reset(token)


def check_commit(root: str) -> None:
    """Runs the guard of the enclosing `guarded_commits` block (if any) for `root`: every commit
    under the root, the stages' and maintenance's, calls this first; raises when it is refused."""
    guard = _commit_guard.get()
    if guard is not None:
        guard(root)

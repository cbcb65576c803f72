"""Optional per-document labels that ingestion carries to the pool and task tables, unread.

`dirt` names what a document is (`clean`, or a kind of dirt: DIRT_KINDS) and `dirt_source`
the cluster it belongs to (for the embedded corpus: the example or template it was made
from). The embedded corpus has them (see data/PROVENANCE.md); a user corpus need not. No
stage reads them: only evaluation does (`grasp_pipeline.evaluation.dirt`), to report what
share of a selection is dirt next to random selections' share.
"""

from __future__ import annotations

import polars as pl

DIRT_COLUMNS = ("dirt", "dirt_source")
CLEAN = "clean"
DIRT_KINDS = ("exact_duplicate", "near_duplicate", "boilerplate", "garbled", "mislabelled")


def with_dirt_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """Returns `frame` with every DIRT_COLUMNS column present as Utf8 (all null where it was missing)."""
    missing = [pl.lit(None, pl.Utf8).alias(c) for c in DIRT_COLUMNS if c not in frame.columns]
    return frame.with_columns(missing) if missing else frame

"""The one error bad corpus input raises, and the column check every step shares."""

from __future__ import annotations

import polars as pl


class CorpusError(ValueError):
    """Bad corpus input; the message names file, row and field and says how to fix it."""


def require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CorpusError(f"{what} frame lacks column(s) {missing} (has {frame.columns}).")

"""Dirt in selections: each selection's share of each labelled kind of dirt and of redundant
examples, to report next to random selections' shares (DESIGN §6, curation impact).

Only evaluation reads the labels (`dirt`, `dirt_source`; corpus/labels.py); no stage does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import polars as pl

from ..corpus.labels import CLEAN, DIRT_KINDS, with_dirt_columns

REDUNDANT = "redundant"
UNLABELLED = "unlabelled"
# A garbled example shares characters, not text, with the example it was made from: its
# dirt_source records where it came from, not a cluster of repeated content.
_NOT_CLUSTERS = ("garbled",)


def dirt_shares(pool: pl.DataFrame, selections: Mapping[str, Iterable[int]]) -> pl.DataFrame:
    """Returns one row per selection, in the order given: `method`, `examples` (how many ids it
    selected), one Float64 share per label and `redundant`.

    `pool` has example_id and content_sha1, and dirt and dirt_source where labelled
    (corpus_shards has them all; missing label columns mean an unlabelled pool). The
    label columns are `clean` and every kind in DIRT_KINDS when any pool example is labelled,
    then any other label the pool holds (sorted), and `unlabelled` if some examples have no
    label; an unlabelled pool gives no label columns. `redundant` is the share of selected
    examples that repeat content already in the selection: 1 - (groups / examples), where
    examples are in one group when they share content_sha1 or a cluster (dirt_source, else
    the example's own id; see _NOT_CLUSTERS), transitively. An id selected twice is redundant.
    Shares of an empty selection are NaN. Ids not in the pool raise ValueError.
    """
    keyed = with_dirt_columns(pool).select("example_id", "content_sha1", "dirt", cluster=_cluster_key(pool))
    labels = _label_columns(keyed["dirt"])
    rows = [_shares(method, keyed, list(ids), labels) for method, ids in selections.items()]
    schema = {"method": pl.Utf8, "examples": pl.Int64, **{c: pl.Float64 for c in (*labels, REDUNDANT)}}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _cluster_key(pool: pl.DataFrame) -> pl.Expr:
    """Returns the expression of each example's cluster: its dirt_source, else its own id."""
    own = pl.col("example_id").cast(pl.Utf8)
    return (pl.when(pl.col("dirt_source").is_not_null() & ~pl.col("dirt").is_in(_NOT_CLUSTERS))
            .then(pl.col("dirt_source")).otherwise(own))


def _label_columns(dirt: pl.Series) -> list[str]:
    """Returns the label columns of the result for a pool's dirt column."""
    present = set(dirt.drop_nulls().unique().to_list())
    if not present:
        return []
    known = [CLEAN, *DIRT_KINDS]
    return known + sorted(present - set(known)) + ([UNLABELLED] if dirt.null_count() else [])


def _shares(method: str, keyed: pl.DataFrame, ids: list[int], labels: list[str]) -> tuple:
    """Returns (method, examples, share per label..., redundant share) of one selection."""
    chosen = pl.DataFrame({"example_id": ids}, schema={"example_id": pl.Int64}).with_row_index("_pick")
    picked = chosen.join(keyed, on="example_id", how="left").sort("_pick")
    missing = picked.filter(pl.col("content_sha1").is_null())["example_id"]
    if len(missing):
        raise ValueError(f"selection {method!r}: {len(missing)} example ids are not in the pool "
                         f"(e.g. {missing[0]}); pass the pool the selection was made from")
    n = picked.height
    if n == 0:
        return (method, 0, *[math.nan] * (len(labels) + 1))
    dirt = picked["dirt"].fill_null(UNLABELLED).to_list()
    shares = [sum(d == label for d in dirt) / n for label in labels]
    groups = _groups(picked["content_sha1"].to_list(), picked["cluster"].to_list())
    return (method, n, *shares, 1 - groups / n)


def _groups(contents: list[str], clusters: list[str]) -> int:
    """Returns how many groups the examples form when sharing a content or a cluster joins them."""
    parent = list(range(len(contents)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, keys in enumerate(zip(contents, clusters)):
        for key in zip(("content", "cluster"), keys):
            j = first.setdefault(key, i)
            parent[root(i)] = root(j)
    return sum(root(i) == i for i in range(len(contents)))

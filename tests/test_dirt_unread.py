"""No stage reads the dirt labels: permuting or removing them changes no table but their own columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from grasp_pipeline.corpus import DEFAULT_CORPUS
from grasp_pipeline.corpus.dirt import read_records
from grasp_pipeline.corpus.labels import DIRT_COLUMNS

from .conftest import build_tables_until, tiny_params

LAST_STAGE = "curated_selection"
MEASUREMENTS = ("seconds", "artifact_seconds")  # wall-clock columns are measurements, not results


def write_corpus(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def permuted_labels(records: list[dict]) -> list[dict]:
    labels = [tuple(r[c] for c in DIRT_COLUMNS) for r in records]
    order = np.random.default_rng(3).permutation(len(labels))
    return [{**r, **dict(zip(DIRT_COLUMNS, labels[i]))} for r, i in zip(records, order)]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Tables up to the curated selections from the embedded corpus with its labels, with them
    permuted over the documents, and with them removed."""
    records = read_records(DEFAULT_CORPUS.read_bytes())
    corpora = tmp_path_factory.mktemp("corpora")
    paths = {"labelled": "",
             "permuted": write_corpus(corpora / "permuted.jsonl", permuted_labels(records)),
             "removed": write_corpus(corpora / "removed.jsonl",
                                     [{k: v for k, v in r.items() if k not in DIRT_COLUMNS} for r in records])}
    return {name: build_tables_until(tmp_path_factory.mktemp(name) / "storage", LAST_STAGE,
                                     tiny_params(corpus={"corpus_path": path}))
            for name, path in paths.items()}


def comparable(store, table: str) -> pl.DataFrame:
    """The table without label and wall-clock columns, its storage root masked, in a fixed row order."""
    frame = store.read(table).drop(*DIRT_COLUMNS, *MEASUREMENTS, strict=False)
    frame = frame.with_columns(pl.col(pl.Utf8).str.replace_all(store.root, "<root>", literal=True))
    return frame.sort([c for c, t in frame.schema.items() if not t.is_nested()])


def tables(store) -> list[str]:
    return sorted(p.name for p in Path(store.root).iterdir() if (p / "_delta_log").is_dir())


def test_the_variants_differ_in_the_pools_labels(stores):
    labelled, permuted, removed = (stores[v].read("corpus_shards").sort("example_id")
                                   for v in ("labelled", "permuted", "removed"))
    assert (labelled["dirt"] != "clean").sum() > 0
    assert (labelled["dirt"] != permuted["dirt"]).sum() > 0
    assert removed["dirt"].null_count() == removed["dirt_source"].null_count() == removed.height


@pytest.mark.parametrize("variant", ["permuted", "removed"])
def test_every_table_but_the_label_columns_is_unchanged_when_labels_are_permuted_or_removed(stores, variant):
    labelled, other = stores["labelled"], stores[variant]
    assert tables(other) == tables(labelled)
    assert "curated_selections" in tables(labelled)
    differing = []
    for table in tables(labelled):
        try:
            assert_frame_equal(comparable(other, table), comparable(labelled, table))
        except AssertionError as error:
            differing.append(f"{table}: {error}")
    assert not differing, "\n".join(differing)

"""`load_documents`: a corpus path (or the embedded corpus) to one row per document."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .errors import CorpusError
from .files import resolve_input
from .labels import DIRT_COLUMNS
from .limits import IngestLimits
from .mapping import CorpusMapping
from .readers import read_file

DEFAULT_CORPUS: Path = Path(__file__).resolve().parents[1] / "data" / "default_corpus.jsonl.gz"


@dataclass(frozen=True)
class IngestReport:
    files: tuple[str, ...]
    documents: int
    replaced_bytes: int  # undecodable bytes replaced by U+FFFD (counted, not fatal)
    domains: dict[str, int]  # documents per domain


def load_documents(path: str | Path | None = None,
                   limits: IngestLimits = IngestLimits(),
                   mapping: CorpusMapping = CorpusMapping()) -> tuple[pl.DataFrame, IngestReport]:
    """Load a corpus and return (documents, report).

    `path` is None (the embedded default corpus), a file, a directory (every
    *.jsonl, *.jsonl.gz, *.json and *.parquet inside, recursively, in sorted
    order; hidden files and folders are skipped) or a glob pattern, local or on
    object storage (`s3://bucket/corpus/*.parquet`). `limits` bound each record,
    file and decompression ratio (`files` and `limits` say what is refused).
    `mapping` names the fields text, domain and id are read from, and the path pattern the
    domain may come from instead (`mapping.CorpusMapping`).

    documents has one row per input record, in file order then row order, with
    Utf8 columns doc_id (the record's `id`, else "<file>:<row>" with <file> the
    file's path relative to the input root), domain, source (the record's
    `source`, else that relative path) and text, then the optional labels dirt and
    dirt_source (labels.DIRT_COLUMNS; null where a record has none).
    """
    files = resolve_input(DEFAULT_CORPUS if path is None else path)
    frames, replaced = [], 0
    for k, file in enumerate(files):
        frame, bad = read_file(file, file.source, limits, mapping)
        frames.append(frame.with_columns(_file=pl.lit(k, pl.Int64)))  # for error messages
        replaced += bad
    docs = pl.concat(frames, how="vertical")
    if docs.height == 0:
        raise CorpusError(f"no documents in {', '.join(map(str, files))}: every file is empty. "
                          "Add records with 'text' and 'domain' fields, or point at other files.")
    _check_unique_ids(docs, files)

    documents = docs.select("doc_id", "domain", "source", "text", *DIRT_COLUMNS)
    counts = documents.group_by("domain").len().sort("domain")
    report = IngestReport(
        files=tuple(str(f) for f in files),
        documents=documents.height,
        replaced_bytes=replaced,
        domains=dict(zip(counts["domain"].to_list(), counts["len"].to_list())),
    )
    return documents, report


def _check_unique_ids(docs: pl.DataFrame, files: list) -> None:
    """Raise CorpusError naming both locations of the first duplicated doc_id."""
    dup = docs.filter(pl.col("doc_id").is_duplicated())
    if dup.height == 0:
        return
    first_id = dup["doc_id"][0]
    a, b = dup.filter(pl.col("doc_id") == first_id).head(2).iter_rows(named=True)
    n_ids = dup["doc_id"].n_unique()
    more = f" ({n_ids - 1} more ids are duplicated too)" if n_ids > 1 else ""
    raise CorpusError(
        f"duplicate document id {first_id!r}: {files[a['_file']]} {a['_unit']} {a['_row']} and "
        f"{files[b['_file']]} {b['_unit']} {b['_row']}{more}. Ids must be unique across the input; "
        "rename one, or drop the 'id' field to use '<file>:<row>' ids.")

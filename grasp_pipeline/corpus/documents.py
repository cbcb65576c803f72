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


def with_targets(documents: pl.DataFrame, report: IngestReport, targets: pl.DataFrame,
                 target_report: IngestReport) -> tuple[pl.DataFrame, IngestReport, tuple[str, ...]]:
    """Returns (the corpus's and a user's evaluation documents as one corpus, its report, the evaluation
    documents' domains): `corpus.target_path`'s documents join the corpus as target-only domains (task
    sets, nothing to the pool), so the split decontaminates the pool against them as against any task
    text. A domain in both is an error naming it: evaluation text under a training domain's name would
    be held out of that domain's training text."""
    shared = sorted(set(report.domains) & set(target_report.domains))
    if shared:
        raise CorpusError(f"corpus.target_path has domain(s) {shared}, which corpus.corpus_path has too: rename "
                          "them in the evaluation files (a target is text the pool does not train on), or list "
                          "the corpus's own domain in corpus.target_domains instead")
    merged = IngestReport(report.files + target_report.files, report.documents + target_report.documents,
                          report.replaced_bytes + target_report.replaced_bytes,
                          {**report.domains, **target_report.domains})
    return pl.concat([documents, targets], how="vertical_relaxed"), merged, tuple(sorted(target_report.domains))


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

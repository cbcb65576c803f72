"""Corpus ingestion: load documents, cut them into byte-bounded examples, split pool/tasks.

Three steps, each a plain function on polars frames (no dagster here, so the
library is usable and testable on its own):

    documents, report = load_documents(path)          # files -> one row per document
    examples = cut_examples(documents, 128)            # documents -> <=128-byte examples
    shards, tasks = split_pool_and_tasks(examples, ...)  # examples -> training pool + held-out tasks

Input files are JSON lines (optionally gzipped), JSON arrays or Parquet, with
required fields `text` and `domain` and optional `id` and `source`.  With no path, the
corpus embedded in the package (data/default_corpus.jsonl.gz, see
data/PROVENANCE.md) is used.  Bad input raises CorpusError, whose message names
the file, the row and the field, and says how to fix it.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

DEFAULT_CORPUS: Path = Path(__file__).resolve().parent / "data" / "default_corpus.jsonl.gz"

SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
DOMAIN_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
DOMAIN_CHARS_HELP = "letters A-Z a-z, digits 0-9, '_', '.' and '-' (no spaces)"

_GLOB_CHARS = re.compile(r"[*?\[]")
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # one per undecodable byte (surrogateescape)
_SURROGATES = re.compile("[\ud800-\udfff]")  # lone surrogates, e.g. from "\ud800" JSON escapes


class CorpusError(ValueError):
    """Bad corpus input; the message names file, row and field and says how to fix it."""


@dataclass(frozen=True)
class IngestReport:
    files: tuple[str, ...]
    documents: int
    replaced_bytes: int  # undecodable bytes replaced by U+FFFD (counted, not fatal)
    domains: dict[str, int]  # documents per domain


# -----------------------------------------------------------------------------
# load_documents


def load_documents(path: str | Path | None = None) -> tuple[pl.DataFrame, IngestReport]:
    """Load a corpus and return (documents, report).

    `path` is None (the embedded default corpus), a file, a directory (every
    *.jsonl, *.jsonl.gz, *.json and *.parquet inside, recursively, in sorted
    order; hidden files and folders are skipped) or a glob pattern.

    documents has one row per input record, in file order then row order, with
    Utf8 columns doc_id (the record's `id`, else "<file>:<row>" with <file> the
    file's path relative to the input root), domain, source (the record's
    `source`, else that relative path) and text.
    """
    files, root = _resolve_input(DEFAULT_CORPUS if path is None else path)
    frames, replaced = [], 0
    for k, file in enumerate(files):
        source = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
        frame, bad = _read_file(file, source)
        frames.append(frame.with_columns(_file=pl.lit(k, pl.Int64)))  # for error messages
        replaced += bad
    docs = pl.concat(frames, how="vertical")
    if docs.height == 0:
        raise CorpusError(f"no documents in {', '.join(map(str, files))}: every file is empty. "
                          "Add records with 'text' and 'domain' fields, or point at other files.")
    _check_unique_ids(docs, files)

    documents = docs.select("doc_id", "domain", "source", "text")
    counts = documents.group_by("domain").len().sort("domain")
    report = IngestReport(
        files=tuple(str(f) for f in files),
        documents=documents.height,
        replaced_bytes=replaced,
        domains=dict(zip(counts["domain"].to_list(), counts["len"].to_list())),
    )
    return documents, report


def _resolve_input(path: str | Path) -> tuple[list[Path], Path]:
    """Return (files to read, root that `source` is relative to) for a file, directory or glob."""
    p = Path(path).expanduser()
    if p.is_file():
        if not _is_supported(p):
            raise CorpusError(f"{p}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
        return [p], p.parent
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.is_file() and _is_supported(f)
                        and not any(part.startswith(".") for part in f.relative_to(p).parts)),
                       key=lambda f: f.relative_to(p).as_posix())
        if not files:
            raise CorpusError(f"directory {p} contains no {', '.join('*' + s for s in SUPPORTED_SUFFIXES)} "
                              "files; put corpus files there or pass a file or glob instead.")
        return files, p
    if _GLOB_CHARS.search(str(path)):
        matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        files = [m for m in matches if m.is_file() and _is_supported(m)]
        if not files:
            raise CorpusError(f"glob {str(path)!r} matches no {', '.join(SUPPORTED_SUFFIXES)} files"
                              f"{f' (it matched {len(matches)} other paths)' if matches else ''}; "
                              "check the pattern and the current directory.")
        # the root is the longest leading part of the pattern without glob characters
        parts = p.parts
        fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
        return files, Path(*parts[:fixed]) if fixed else Path(".")
    raise CorpusError(f"corpus path {str(path)!r} matches nothing: no such file or directory "
                      "(and it is not a glob pattern). Check the path, or pass None for the default corpus.")


def _is_supported(f: Path) -> bool:
    return f.name.endswith(SUPPORTED_SUFFIXES)


def _read_file(file: Path, source: str) -> tuple[pl.DataFrame, int]:
    """Return (frame with _row, _unit, doc_id, domain, source, text; replaced byte count) for one file."""
    reader = _read_parquet if file.name.endswith(".parquet") else _read_json
    frame, bad = reader(file)
    frame = frame.with_columns(
        doc_id=pl.coalesce("id", pl.lit(f"{source}:") + pl.col("_row").cast(pl.Utf8)),
        source=pl.coalesce("source", pl.lit(source, pl.Utf8)),
    )
    _check_domains_and_text(frame, file)
    return frame.select("_row", "_unit", "doc_id", "domain", "source", "text"), bad


def _decode(raw: bytes) -> tuple[str, int]:
    """Return (raw decoded as UTF-8 with U+FFFD for undecodable bytes, number of such bytes)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        # surrogateescape maps each bad byte to one lone surrogate, which makes them countable
        bad = len(_SURROGATE_ESCAPES.findall(raw.decode("utf-8", "surrogateescape")))
        return raw.decode("utf-8", "replace"), bad


def _clean(s: str | None) -> tuple[str | None, int]:
    """Return (s with lone surrogates replaced by U+FFFD, their count); None stays None."""
    if s is None or s.isascii() or not _SURROGATES.search(s):
        return s, 0
    return _SURROGATES.subn("\ufffd", s)


def _read_json(file: Path) -> tuple[pl.DataFrame, int]:
    """Return (frame, replaced bytes) for a JSON-lines file (.jsonl, .jsonl.gz) or a .json file.

    A .json file holding an array of objects is read as such (rows are 1-based
    elements); any other .json file is read as JSON lines.
    """
    raw = file.read_bytes()
    if file.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CorpusError(f"{file}: cannot decompress ({e}); re-create the .gz file or "
                              "store it uncompressed as .jsonl.") from None
    text, bad = _decode(raw)
    text = text.removeprefix("\ufeff")  # tolerate a UTF-8 byte order mark

    unit = "line"
    if file.name.endswith(".json") and text.lstrip().startswith("["):
        unit = "element"
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. "
                              "Fix the JSON, or store one object per line as .jsonl.") from None
        records = list(enumerate(items, start=1))
    else:
        records = []
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not records
            try:
                records.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise CorpusError(f"{file}: line {n} is not valid JSON ({e.msg} at column {e.colno}). "
                                  "Each line must be one JSON object; fix or delete that line.") from None

    rows, ids, sources, domains, texts = [], [], [], [], []
    for n, rec in records:
        where = f"{file}: {unit} {n}"
        if not isinstance(rec, dict):
            raise CorpusError(f"{where}: expected a JSON object with 'text' and 'domain', "
                              f"got {type(rec).__name__}.")
        for field in ("text", "domain"):
            if field not in rec:
                raise CorpusError(f"{where}: missing required field '{field}' (fields present: "
                                  f"{sorted(rec)}). Every record needs 'text' and 'domain'.")
        t, d, i, src = rec["text"], rec["domain"], rec.get("id"), rec.get("source")
        if not isinstance(t, str):
            raise CorpusError(f"{where}: field 'text' must be a string, got {type(t).__name__}.")
        if d is not None and not isinstance(d, str):
            raise CorpusError(f"{where}: field 'domain' must be a string, got {type(d).__name__}.")
        if i is not None:
            if isinstance(i, int) and not isinstance(i, bool):
                i = str(i)
            elif not isinstance(i, str):
                raise CorpusError(f"{where}: field 'id' must be a string or integer, got {type(i).__name__}.")
        if src is not None and not isinstance(src, str):
            raise CorpusError(f"{where}: field 'source' must be a string, got {type(src).__name__}.")
        # lone surrogates (from "\ud800"-style escapes) cannot be stored as UTF-8
        (t, bad_t), (i, bad_i), (src, bad_s) = _clean(t), _clean(i), _clean(src)
        bad += bad_t + bad_i + bad_s
        rows.append(n)
        ids.append(i)
        sources.append(src)
        domains.append(d)
        texts.append(t)
    frame = pl.DataFrame({"_row": rows, "id": ids, "source": sources, "domain": domains, "text": texts},
                         schema={"_row": pl.Int64, "id": pl.Utf8, "source": pl.Utf8,
                                 "domain": pl.Utf8, "text": pl.Utf8})
    return frame.with_columns(_unit=pl.lit(unit, pl.Utf8)), bad


def _read_parquet(file: Path) -> tuple[pl.DataFrame, int]:
    """Return (frame, replaced bytes) for a Parquet file; rows are 0-based row indices."""
    try:
        present = list(pl.read_parquet_schema(file))
        for field in ("text", "domain"):
            if field not in present:
                raise CorpusError(f"{file}: missing required column '{field}' (columns present: "
                                  f"{present}). Every file needs 'text' and 'domain' columns.")
        # read only the columns used; extra columns (embeddings, metadata) may be large
        table = pl.read_parquet(file, columns=[c for c in ("id", "source", "domain", "text") if c in present])
    except CorpusError:
        raise
    except Exception as e:  # polars raises several types for corrupt files; all mean the same here
        raise CorpusError(f"{file}: cannot read as Parquet ({type(e).__name__}: {e}). "
                          "Re-export the file or remove it from the input.") from None
    bad = 0
    columns = {"_row": pl.int_range(table.height, dtype=pl.Int64, eager=True)}
    for field in ("id", "source", "domain", "text"):
        if field not in table.columns:
            columns[field] = pl.Series(field, [None] * table.height, pl.Utf8)
            continue
        col = table[field]
        if col.dtype == pl.Binary:
            decoded = [None if v is None else _decode(v) for v in col.to_list()]
            bad += sum(v[1] for v in decoded if v is not None)
            col = pl.Series(field, [None if v is None else v[0] for v in decoded], pl.Utf8)
        elif col.dtype in (pl.Categorical, pl.Enum) or (field == "id" and col.dtype.is_integer()):
            col = col.cast(pl.Utf8)
        elif col.dtype not in (pl.Utf8, pl.Null):  # an all-null column is caught row-wise later
            first = _first_non_null(col)
            raise CorpusError(f"{file}: row {first}: column '{field}' must hold strings, "
                              f"found {col.dtype}. Store '{field}' as a string (utf8) column.")
        columns[field] = col.cast(pl.Utf8)
    return pl.DataFrame(columns).with_columns(_unit=pl.lit("row", pl.Utf8)), bad


def _first_non_null(col: pl.Series) -> int:
    idx = col.is_not_null().arg_true()
    return int(idx[0]) if len(idx) else 0


def _check_domains_and_text(frame: pl.DataFrame, file: Path) -> None:
    """Raise CorpusError at the first row with null text or a null, empty or malformed domain."""
    checks = [
        (pl.col("text").is_null(), "text", "field 'text' is null; it must be a string"),
        (pl.col("domain").is_null() | (pl.col("domain") == ""), "domain",
         "field 'domain' is null or empty; every record needs a domain name"),
        (~pl.col("domain").str.contains(f"^{DOMAIN_PATTERN.pattern}$"), "domain", None),
    ]
    for condition, field, message in checks:
        hit = frame.filter(condition).head(1)
        if hit.height:
            row, unit = hit["_row"][0], hit["_unit"][0]
            if message is None:
                message = (f"field 'domain' is {hit['domain'][0]!r}; domain names may only contain "
                           f"{DOMAIN_CHARS_HELP}. Rename it, e.g. {_suggest(hit['domain'][0])!r}")
            raise CorpusError(f"{file}: {unit} {row}: {message}.")


def _suggest(domain: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", domain.strip()).strip("_") or "my_domain"


def _check_unique_ids(docs: pl.DataFrame, files: list[Path]) -> None:
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


# -----------------------------------------------------------------------------
# cut_examples

EXAMPLE_SCHEMA = {
    "example_id": pl.Int64, "domain": pl.Utf8, "source": pl.Utf8, "doc_id": pl.Utf8,
    "offset": pl.Int64, "text": pl.Utf8, "n_bytes": pl.Int64, "content_sha1": pl.Utf8,
}
_ID_MASK = (1 << 63) - 1


def example_id(domain: str, doc_id: str, chunk_index: int) -> int:
    """Return the stable 63-bit id of chunk `chunk_index` of a document.

    First 8 bytes of sha1(f"{domain}\\0{doc_id}\\0{chunk_index}"), big-endian,
    masked to 63 bits so it fits Int64.  It depends only on the document, so
    ids do not move when other files are added to the input.
    """
    digest = hashlib.sha1(f"{domain}\0{doc_id}\0{chunk_index}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


def cut_examples(documents: pl.DataFrame, example_bytes: int = 128, *,
                 whole_documents: bool = False) -> pl.DataFrame:
    """Cut each document's UTF-8 bytes into consecutive examples of at most `example_bytes`.

    Returns one row per example, in document order then offset order, with
    columns example_id, domain, source, doc_id, offset (byte offset in the
    document), text, n_bytes and content_sha1 (hex sha1 of the example bytes).
    A cut goes at the last character boundary <= the limit, so no multi-byte
    character is split.  Whitespace-only pieces and pieces shorter than
    example_bytes // 2 (document tails) are dropped; chunk indices, and so ids,
    count dropped pieces too.

    With `whole_documents` (records such as images, whose workload parses each row), every
    document is one example, whatever its length (chunk index 0, offset 0); only
    whitespace-only documents are dropped.
    """
    if example_bytes < 4:
        raise CorpusError(f"example_bytes={example_bytes} is too small: a UTF-8 character can take "
                          "4 bytes, so use example_bytes >= 4.")
    _require_columns(documents, ("doc_id", "domain", "source", "text"), "documents")
    keys = documents.select("domain", "doc_id")
    if keys.is_duplicated().any():
        d, i = keys.filter(keys.is_duplicated()).row(0)
        raise CorpusError(f"document ({d!r}, {i!r}) appears more than once; example ids would collide. "
                          "Give each document a unique id within its domain.")

    out = {k: [] for k in EXAMPLE_SCHEMA}
    min_bytes = example_bytes // 2
    for domain, doc_id, source, text in documents.select("domain", "doc_id", "source", "text").iter_rows():
        data = (text or "").encode("utf-8")
        bounds = [(0, len(data))] if whole_documents and data else _chunk_bounds(data, example_bytes)
        for chunk_index, (start, end) in enumerate(bounds):
            piece = data[start:end]
            if len(piece) < min_bytes and not whole_documents:
                continue
            piece_text = piece.decode("utf-8")
            if piece_text.isspace():
                continue
            out["example_id"].append(example_id(domain, doc_id, chunk_index))
            out["domain"].append(domain)
            out["source"].append(source)
            out["doc_id"].append(doc_id)
            out["offset"].append(start)
            out["text"].append(piece_text)
            out["n_bytes"].append(end - start)
            out["content_sha1"].append(hashlib.sha1(piece).hexdigest())
    return pl.DataFrame(out, schema=EXAMPLE_SCHEMA)


def _chunk_bounds(data: bytes, limit: int) -> list[tuple[int, int]]:
    """Return greedy (start, end) byte ranges of at most `limit` bytes, cut at character starts."""
    n = len(data)
    if n == 0:
        return []
    if data.isascii():  # every byte starts a character: plain fixed-size cuts
        return [(s, min(s + limit, n)) for s in range(0, n, limit)]
    # floor[p] = the largest character boundary <= p (continuation bytes are 0b10xxxxxx)
    arr = np.frombuffer(data, dtype=np.uint8)
    is_boundary = np.append((arr & 0xC0) != 0x80, True)
    floor = np.maximum.accumulate(np.where(is_boundary, np.arange(n + 1), 0))
    bounds, start = [], 0
    while start < n:
        end = int(floor[min(start + limit, n)])  # > start, as limit >= 4 >= any character's length
        bounds.append((start, end))
        start = end
    return bounds


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CorpusError(f"{what} frame lacks column(s) {missing} (has {frame.columns}).")


# -----------------------------------------------------------------------------
# split_pool_and_tasks

SHARD_COLUMNS = ["example_id", "shard", "domain", "text", "n_bytes", "source", "content_sha1", "doc_id", "offset"]
TASK_COLUMNS = ["task", "example_id", "domain", "text", "n_bytes", "content_sha1"]


def split_pool_and_tasks(
    examples: pl.DataFrame,
    *,
    task_examples_per_domain: int,
    pool_examples_per_domain: int | None,
    shard_size: int,
    seed: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split examples into a training pool (sharded) and one held-out task set per domain.

    Per domain, examples are put in reading order (documents in order of first
    appearance, then offset).  The task set is the last `task_examples_per_domain`
    of them: a held-out stretch of text, so neighbouring chunks of a task example
    mostly stay out of the pool.  The pool is a random sample (numpy default_rng
    seeded with (seed, domain), so one domain's sample does not depend on which
    other domains exist) of at most `pool_examples_per_domain` (None = all) of the
    remaining examples, minus any whose content equals a task example's, sorted
    by example_id and cut into shards "<domain>-<i:04d>" of `shard_size` rows.

    Returns (corpus_shards, task_sets):
      corpus_shards: example_id, shard, domain, text, n_bytes, source, content_sha1,
                     doc_id, offset; sorted by (domain, shard, example_id).
      task_sets:     task (= domain), example_id, domain, text, n_bytes, content_sha1;
                     sorted by (task, example_id).
    """
    if task_examples_per_domain < 1:
        raise CorpusError(f"task_examples_per_domain must be >= 1, got {task_examples_per_domain}.")
    if pool_examples_per_domain is not None and pool_examples_per_domain < 1:
        raise CorpusError(f"pool_examples_per_domain must be >= 1 or None (all), got {pool_examples_per_domain}.")
    if shard_size < 1:
        raise CorpusError(f"shard_size must be >= 1, got {shard_size}.")
    if seed < 0:
        raise CorpusError(f"seed must be >= 0 (numpy default_rng), got {seed}.")
    _require_columns(examples, tuple(c for c in SHARD_COLUMNS if c != "shard"), "examples")
    if examples.height == 0:
        raise CorpusError("no examples to split: the documents produced no examples. "
                          "Add text, or lower example_bytes.")

    n_task = task_examples_per_domain
    need = n_task + max(8, n_task)
    ordered = (
        examples.with_row_index("_row")
        .with_columns(_doc_rank=pl.col("_row").min().over("domain", "doc_id"))
        .sort("domain", "_doc_rank", "offset", maintain_order=True)
    )
    pools, tasks = [], []
    for group in ordered.partition_by("domain", maintain_order=True):
        domain = group["domain"][0]
        if group.height < need:
            raise CorpusError(
                f"domain {domain!r} has {group.height} examples, but needs at least {need} "
                f"({n_task} held-out task examples + at least {max(8, n_task)} for the pool). "
                "Lower task_examples_per_domain or add more text to this domain.")
        task = group.tail(n_task)
        # an identical chunk in the pool would let the task be 'attributed' to a copy of itself
        rest = group.head(group.height - n_task).filter(~pl.col("content_sha1").is_in(task["content_sha1"].implode()))
        if pool_examples_per_domain is not None and pool_examples_per_domain < rest.height:
            rng = np.random.default_rng([seed, _domain_key(domain)])
            rest = rest[np.sort(rng.choice(rest.height, size=pool_examples_per_domain, replace=False))]
        pool = rest.sort("example_id")
        shard = pl.Series("shard", [f"{domain}-{i // shard_size:04d}" for i in range(pool.height)], pl.Utf8)
        pools.append(pool.with_columns(shard))
        tasks.append(task.with_columns(task=pl.col("domain")))

    corpus_shards = (pl.concat(pools).select(SHARD_COLUMNS)
                     .cast({"example_id": pl.Int64, "n_bytes": pl.Int64, "offset": pl.Int64})
                     .sort("domain", "shard", "example_id"))
    task_sets = (pl.concat(tasks).select(TASK_COLUMNS)
                 .cast({"example_id": pl.Int64, "n_bytes": pl.Int64})
                 .sort("task", "example_id"))
    return corpus_shards, task_sets


def _domain_key(domain: str) -> int:
    """Return a stable 32-bit integer for `domain` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(domain.encode("utf-8")).digest()[:4], "big")

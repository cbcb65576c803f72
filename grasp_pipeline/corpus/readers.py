"""Reading one corpus file (JSON lines, optionally gzipped; a JSON array; Parquet) into rows.

Undecodable bytes are replaced by U+FFFD and counted; a malformed record is a CorpusError
naming the file, the row and the field."""

from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path

import polars as pl

from .errors import CorpusError
from .labels import DIRT_COLUMNS


DOMAIN_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
DOMAIN_CHARS_HELP = "letters A-Z a-z, digits 0-9, '_', '.' and '-' (no spaces)"
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # one per undecodable byte (surrogateescape)
_SURROGATES = re.compile("[\ud800-\udfff]")  # lone surrogates, e.g. from "\ud800" JSON escapes


def read_file(file: Path, source: str) -> tuple[pl.DataFrame, int]:
    """Return (frame with _row, _unit, doc_id, domain, source, text, dirt, dirt_source; replaced byte
    count) for one file; the optional label fields (labels.DIRT_COLUMNS) are null where absent."""
    reader = _read_parquet if file.name.endswith(".parquet") else _read_json
    frame, bad = reader(file)
    frame = frame.with_columns(
        doc_id=pl.coalesce("id", pl.lit(f"{source}:") + pl.col("_row").cast(pl.Utf8)),
        source=pl.coalesce("source", pl.lit(source, pl.Utf8)),
    )
    _check_domains_and_text(frame, file)
    return frame.select("_row", "_unit", "doc_id", "domain", "source", "text", *DIRT_COLUMNS), bad


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
    text, bad = _json_text(file)
    unit, records = _json_records(file, text)
    columns = {"_row": [], "id": [], "source": [], "domain": [], "text": [], **{c: [] for c in DIRT_COLUMNS}}
    for n, rec in records:
        t, d, i, src = _checked_record(rec, f"{file}: {unit} {n}")
        labels = _checked_labels(rec, f"{file}: {unit} {n}")
        # lone surrogates (from "\ud800"-style escapes) cannot be stored as UTF-8
        (t, bad_t), (i, bad_i), (src, bad_s) = _clean(t), _clean(i), _clean(src)
        bad += bad_t + bad_i + bad_s
        labels, bad_l = zip(*map(_clean, labels))
        bad += sum(bad_l)
        for name, value in zip(columns, (n, i, src, d, t, *labels)):
            columns[name].append(value)
    frame = pl.DataFrame(columns, schema={"_row": pl.Int64, "id": pl.Utf8, "source": pl.Utf8,
                                          "domain": pl.Utf8, "text": pl.Utf8, **{c: pl.Utf8 for c in DIRT_COLUMNS}})
    return frame.with_columns(_unit=pl.lit(unit, pl.Utf8)), bad


def _json_text(file: Path) -> tuple[str, int]:
    """Return (the file's text, decompressed and decoded, without a byte order mark; replaced bytes)."""
    raw = file.read_bytes()
    if file.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise CorpusError(f"{file}: cannot decompress ({e}); re-create the .gz file or "
                              "store it uncompressed as .jsonl.") from None
    text, bad = _decode(raw)
    return text.removeprefix("\ufeff"), bad  # tolerate a UTF-8 byte order mark


def _json_records(file: Path, text: str) -> tuple[str, list[tuple[int, object]]]:
    """Return (unit: "element" or "line", [(element or line number, parsed value)])."""
    if file.name.endswith(".json") and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. "
                              "Fix the JSON, or store one object per line as .jsonl.") from None
        return "element", list(enumerate(items, start=1))
    records = []
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are not records
        try:
            records.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}: line {n} is not valid JSON ({e.msg} at column {e.colno}). "
                              "Each line must be one JSON object; fix or delete that line.") from None
    return "line", records


def _checked_record(rec, where: str) -> tuple[str, str | None, str | None, str | None]:
    """Return (text, domain, id, source) of one record; a CorpusError naming `where` and the field."""
    if not isinstance(rec, dict):
        raise CorpusError(f"{where}: expected a JSON object with 'text' and 'domain', got {type(rec).__name__}.")
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
    return t, d, i, src


def _checked_labels(rec: dict, where: str) -> tuple[str | None, ...]:
    """Return the optional label fields (DIRT_COLUMNS) of one record, None where absent."""
    values = tuple(rec.get(field) for field in DIRT_COLUMNS)
    for field, value in zip(DIRT_COLUMNS, values):
        if value is not None and not isinstance(value, str):
            raise CorpusError(f"{where}: optional field '{field}' must be a string or null, "
                              f"got {type(value).__name__}.")
    return values


def _read_parquet(file: Path) -> tuple[pl.DataFrame, int]:
    """Return (frame, replaced bytes) for a Parquet file; rows are 0-based row indices."""
    try:
        present = list(pl.read_parquet_schema(file))
        for field in ("text", "domain"):
            if field not in present:
                raise CorpusError(f"{file}: missing required column '{field}' (columns present: "
                                  f"{present}). Every file needs 'text' and 'domain' columns.")
        # read only the columns used; extra columns (embeddings, metadata) may be large
        table = pl.read_parquet(file, columns=[c for c in ("id", "source", "domain", "text", *DIRT_COLUMNS)
                                               if c in present])
    except CorpusError:
        raise
    except Exception as e:  # polars raises several types for corrupt files; all mean the same here
        raise CorpusError(f"{file}: cannot read as Parquet ({type(e).__name__}: {e}). "
                          "Re-export the file or remove it from the input.") from None
    bad = 0
    columns = {"_row": pl.int_range(table.height, dtype=pl.Int64, eager=True)}
    for field in ("id", "source", "domain", "text", *DIRT_COLUMNS):
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

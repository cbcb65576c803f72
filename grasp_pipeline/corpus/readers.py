"""Reading one corpus file (JSON lines, optionally gzipped; a JSON array; Parquet; a Hugging Face
dataset's .arrow shard) into rows, taking text, domain and id from the fields `mapping` names.

Undecodable bytes are replaced by U+FFFD and counted; a malformed record is a CorpusError
naming the file, the row and the field. JSON lines are streamed one line at a time and every
read is bounded (`limits.IngestLimits`), so memory follows the largest document, not the
file, and a runaway line or a decompression bomb is refused by name."""

from __future__ import annotations

import json
import re

import polars as pl

from .errors import CorpusError
from .files import CorpusFile
from .labels import DIRT_COLUMNS
from .limits import IngestLimits, open_limited, read_lines
from .mapping import CorpusMapping, lookup

DOMAIN_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
DOMAIN_CHARS_HELP = "letters A-Z a-z, digits 0-9, '_', '.' and '-' (no spaces)"
_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # one per undecodable byte (surrogateescape)
_SURROGATES = re.compile("[\ud800-\udfff]")  # lone surrogates, e.g. from "\ud800" JSON escapes


def read_file(file: CorpusFile, source: str, limits: IngestLimits = IngestLimits(),
              mapping: CorpusMapping = CorpusMapping()) -> tuple[pl.DataFrame, int]:
    """Return (frame with _row, _unit, doc_id, domain, source, text, dirt, dirt_source; replaced byte
    count) for one file; the optional label fields (labels.DIRT_COLUMNS) are null where absent. Text,
    domain and id come from the fields `mapping` names (the domain perhaps from the file's path)."""
    reader = _read_parquet if file.name.endswith((".parquet", ".arrow")) else _read_json
    frame, bad = reader(file, limits, mapping, mapping.path_domain(file.source, str(file)))
    text = frame["text"]  # kept out of the expressions below: polars would copy it through each of them
    frame = frame.drop("text").with_columns(
        doc_id=pl.coalesce("id", pl.lit(f"{source}:") + pl.col("_row").cast(pl.Utf8)),
        source=pl.coalesce("source", pl.lit(source, pl.Utf8)),
        _null_text=text.is_null(),
    )
    _check_domains_and_text(frame, file, mapping)
    return frame.select("_row", "_unit", "doc_id", "domain", "source", *DIRT_COLUMNS).with_columns(text), bad


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


def _read_json(file: CorpusFile, limits: IngestLimits, mapping: CorpusMapping,
               path_domain: str | None) -> tuple[pl.DataFrame, int]:
    """Return (frame, replaced bytes) for a JSON-lines file (.jsonl, .jsonl.gz) or a .json file.

    A .json file holding an array of objects is read as such (rows are 1-based
    elements); any other .json file is read as JSON lines.
    """
    columns = {"_row": [], "id": [], "source": [], "domain": [], "text": [], **{c: [] for c in DIRT_COLUMNS}}
    unit, records, bad = _json_records(file, limits)
    for n, rec in records:
        t, d, i, src = _checked_record(rec, f"{file}: {unit} {n}", mapping, path_domain)
        labels = _checked_labels(rec, f"{file}: {unit} {n}")
        del rec
        # lone surrogates (from "\ud800"-style escapes) cannot be stored as UTF-8
        (t, bad_t), (i, bad_i), (src, bad_s) = _clean(t), _clean(i), _clean(src)
        bad[0] += bad_t + bad_i + bad_s
        labels, bad_l = zip(*map(_clean, labels))
        bad[0] += sum(bad_l)
        for name, value in zip(columns, (n, i, src, d, _utf8(t), *labels)):
            columns[name].append(value)
        del t
    text = _text_column(columns.pop("text"))
    frame = pl.DataFrame(columns, schema={"_row": pl.Int64, "id": pl.Utf8, "source": pl.Utf8, "domain": pl.Utf8,
                                          **{c: pl.Utf8 for c in DIRT_COLUMNS}})
    return frame.with_columns(text=text, _unit=pl.lit(unit, pl.Utf8)), bad[0]


def _utf8(text: str) -> bytes:
    """A document's text as UTF-8 bytes: a quarter to a half of a Python str's size for most scripts."""
    return text.encode("utf-8")


def _text_column(texts: list[bytes]) -> pl.Series:
    """The text column from UTF-8 bytes (one copy into polars' own buffers, no Python str per document)."""
    column = pl.Series("text", texts, dtype=pl.Binary)
    texts.clear()
    return column.cast(pl.Utf8)  # validates UTF-8 in place


def _json_records(file: CorpusFile, limits: IngestLimits):
    """Return (unit: "element" or "line", an iterator of (number, parsed value), [replaced bytes so far]).

    JSON lines are parsed one at a time from the (decompressed) stream; a JSON array is
    parsed whole (it is one value), within `max_file_bytes`.
    """
    stream = open_limited(file, limits)
    bad = [0]
    head = stream.peek(64)[:64].removeprefix(b"\xef\xbb\xbf")  # tolerate a UTF-8 byte order mark
    if file.name.endswith(".json") and head.lstrip().startswith(b"["):
        with stream:
            text, bad[0] = _decode(stream.read().removeprefix(b"\xef\xbb\xbf"))
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{file}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}. "
                              "Fix the JSON, or store one object per line as .jsonl.") from None
        return "element", enumerate(items, start=1), bad
    return "line", _parsed_lines(stream, file, limits, bad), bad


def _parsed_lines(stream, file: CorpusFile, limits: IngestLimits, bad: list[int]):
    """Yields (line number, parsed record) of a JSON-lines stream, skipping blank lines."""
    with stream:
        for n, line in read_lines(stream, file, limits):
            if n == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue  # blank lines (e.g. a trailing newline) are not records
            try:
                try:  # parsing the bytes themselves keeps one copy of a big document, not two
                    record = json.loads(line)
                except UnicodeDecodeError:
                    text, replaced = _decode(line)
                    bad[0] += replaced
                    record = json.loads(text)
                    del text
            except json.JSONDecodeError as e:
                raise CorpusError(f"{file}: line {n} is not valid JSON ({e.msg} at column {e.colno}). "
                                  "Each line must be one JSON object; fix or delete that line.") from None
            del line  # not held while the caller works on the record
            yield n, record


def _checked_record(rec, where: str, mapping: CorpusMapping,
                    path_domain: str | None) -> tuple[str, str | None, str | None, str | None]:
    """Return (text, domain, id, source) of one record; a CorpusError naming `where` and the field."""
    text_name, domain_name, id_name = mapping.text_field, mapping.domain_field, mapping.id_field
    if not isinstance(rec, dict):
        raise CorpusError(f"{where}: expected a JSON object with {text_name!r} and {domain_name!r}, "
                          f"got {type(rec).__name__}.")
    (has_t, t), (has_d, d) = lookup(rec, text_name), lookup(rec, domain_name)
    if mapping.domain_from_path or (not has_d and path_domain is not None):
        has_d, d = True, path_domain
    for field, has, setting in ((text_name, has_t, "text_field"), (domain_name, has_d, "domain_field")):
        if not has:
            raise CorpusError(f"{where}: missing required field '{field}' (fields present: {sorted(rec)}). "
                              f"Every record needs a text and a domain: set corpus.{setting} to the field your "
                              "records use (dotted keys reach nested objects: 'metadata.source')"
                              + (", or corpus.domain_from_path." if setting == "domain_field" else "."))
    i, src = lookup(rec, id_name)[1], rec.get("source")
    if not isinstance(t, str):
        raise CorpusError(f"{where}: field '{text_name}' must be a string, got {type(t).__name__}.")
    if d is not None and not isinstance(d, str):
        raise CorpusError(f"{where}: field '{domain_name}' must be a string, got {type(d).__name__}.")
    if i is not None:
        if isinstance(i, int) and not isinstance(i, bool):
            i = str(i)
        elif not isinstance(i, str):
            raise CorpusError(f"{where}: field '{id_name}' must be a string or integer, got {type(i).__name__}.")
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


def _read_parquet(file: CorpusFile, limits: IngestLimits, mapping: CorpusMapping,
                  path_domain: str | None) -> tuple[pl.DataFrame, int]:
    """Return (frame, replaced bytes) for a Parquet file or an .arrow shard of a Hugging Face dataset
    saved with `save_to_disk` (an Arrow IPC stream); rows are 0-based row indices.

    Local and object-store Parquet files alike go through polars' Parquet scanner (object stores
    with the tables' storage options); an .arrow shard is read whole, within `max_file_bytes`."""
    if file.size() > limits.max_file_bytes:
        raise CorpusError(f"{file}: {file.size()} bytes, more than corpus.max_file_bytes = "
                          f"{limits.max_file_bytes}; split the file or raise the limit.")
    names = {"id": mapping.id_field, "source": "source", "domain": mapping.domain_field, "text": mapping.text_field,
             **{c: c for c in DIRT_COLUMNS}}
    try:
        if file.name.endswith(".arrow"):  # read directly, so neither `datasets` nor fsspec is needed, even on S3
            with file.open() as stream:
                scan = pl.read_ipc_stream(stream).lazy()
        else:
            scan = pl.scan_parquet(file.location, storage_options=file.storage_options or None)
        schema = scan.collect_schema()
        found = {field: _column(schema, name) for field, name in names.items()}
        if mapping.domain_from_path or (found["domain"] is None and path_domain is not None):
            found["domain"] = pl.lit(path_domain, pl.Utf8)
        for field, setting in (("text", "text_field"), ("domain", "domain_field")):
            if found[field] is None:
                raise CorpusError(f"{file}: missing required column '{names[field]}' (columns present: "
                                  f"{list(schema)}). Every file needs a text and a domain column: set "
                                  f"corpus.{setting} to the column your files use (dotted names reach struct "
                                  "fields: 'metadata.source').")
        # read only the columns used; extra columns (embeddings, metadata) may be large
        table = scan.select([expr.alias(field) for field, expr in found.items() if expr is not None]).collect()
    except CorpusError:
        raise
    except Exception as e:  # polars raises several types for corrupt files; all mean the same here
        kind = "an Arrow stream" if file.name.endswith(".arrow") else "Parquet"
        raise CorpusError(f"{file}: cannot read as {kind} ({type(e).__name__}: {e}). "
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
            raise CorpusError(f"{file}: row {first}: column '{names[field]}' must hold strings, "
                              f"found {col.dtype}. Store '{names[field]}' as a string (utf8) column.")
        columns[field] = col.cast(pl.Utf8)
    frame = pl.DataFrame(columns)
    _check_record_sizes(frame, file, limits)
    return frame.with_columns(_unit=pl.lit("row", pl.Utf8)), bad


def _check_record_sizes(frame: pl.DataFrame, file: CorpusFile, limits: IngestLimits) -> None:
    """Raise CorpusError at the first Parquet row whose text is longer than `max_record_bytes`."""
    sizes = frame["text"].str.len_bytes()
    if sizes.max() is not None and sizes.max() > limits.max_record_bytes:
        row = int((sizes > limits.max_record_bytes).arg_true()[0])
        raise CorpusError(f"{file}: row {row}: field 'text' is {sizes[row]} bytes, more than "
                          f"corpus.max_record_bytes = {limits.max_record_bytes}; split the document or raise "
                          "the limit.")


def _column(schema: pl.Schema, name: str) -> pl.Expr | None:
    """The expression reading column `name` (as written, else dotted keys into struct fields), None if absent."""
    if name in schema:
        return pl.col(name)
    head, *keys = name.split(".")
    expr, dtype = pl.col(head), schema.get(head)
    for key in keys:
        if not isinstance(dtype, pl.Struct) or key not in {f.name for f in dtype.fields}:
            return None
        expr, dtype = expr.struct.field(key), next(f.dtype for f in dtype.fields if f.name == key)
    return expr if dtype is not None else None


def _first_non_null(col: pl.Series) -> int:
    idx = col.is_not_null().arg_true()
    return int(idx[0]) if len(idx) else 0


def _check_domains_and_text(frame: pl.DataFrame, file: CorpusFile, mapping: CorpusMapping) -> None:
    """Raise CorpusError at the first row with null text (`_null_text`) or a null, empty or malformed domain."""
    domain = "the domain its path gives" if mapping.domain_from_path else f"field '{mapping.domain_field}'"
    checks = [
        (pl.col("_null_text"), "text", f"field '{mapping.text_field}' is null; it must be a string"),
        (pl.col("domain").is_null() | (pl.col("domain") == ""), "domain",
         f"{domain} is null or empty; every record needs a domain name"),
        (~pl.col("domain").str.contains(f"^{DOMAIN_PATTERN.pattern}$"), "domain", None),
    ]
    for condition, _field, message in checks:
        hit = frame.filter(condition).head(1)
        if hit.height:
            row, unit = hit["_row"][0], hit["_unit"][0]
            if message is None:
                message = (f"{domain} is {hit['domain'][0]!r}; domain names may only contain "
                           f"{DOMAIN_CHARS_HELP}. Rename it, e.g. {_suggest(hit['domain'][0])!r}")
            raise CorpusError(f"{file}: {unit} {row}: {message}.")


def _suggest(domain: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", domain.strip()).strip("_") or "my_domain"

"""`cut_examples`: documents to byte-bounded examples with stable ids."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from .errors import CorpusError, require_columns
from .labels import DIRT_COLUMNS, with_dirt_columns


EXAMPLE_SCHEMA = {
    "example_id": pl.Int64, "domain": pl.Utf8, "source": pl.Utf8, "doc_id": pl.Utf8,
    "offset": pl.Int64, "text": pl.Utf8, "n_bytes": pl.Int64, "content_sha1": pl.Utf8,
    **{c: pl.Utf8 for c in DIRT_COLUMNS},  # the document's optional labels, carried unread
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
    document), text, n_bytes, content_sha1 (hex sha1 of the example bytes) and the
    document's labels dirt and dirt_source (null where `documents` has none).
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
    require_columns(documents, ("doc_id", "domain", "source", "text"), "documents")
    keys = documents.select("domain", "doc_id")
    if keys.is_duplicated().any():
        d, i = keys.filter(keys.is_duplicated()).row(0)
        raise CorpusError(f"document ({d!r}, {i!r}) appears more than once; example ids would collide. "
                          "Give each document a unique id within its domain.")

    out = {k: [] for k in EXAMPLE_SCHEMA}
    min_bytes = example_bytes // 2
    rows = with_dirt_columns(documents).select("domain", "doc_id", "source", "text", *DIRT_COLUMNS).iter_rows()
    for domain, doc_id, source, text, *labels in rows:
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
            for column, value in zip(DIRT_COLUMNS, labels):
                out[column].append(value)
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

"""`cut_examples`: documents to byte-bounded examples with stable ids."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable

import numpy as np
import polars as pl
import pyarrow as pa

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
    digest = hashlib.sha1(f"{domain}\0{doc_id}\0{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & _ID_MASK


def cut_examples(documents: pl.DataFrame, example_bytes: int = 128, *, whole_documents: bool = False,
                 cutter: Callable[[str], list[int]] | None = None) -> pl.DataFrame:
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

    With `cutter` (a workload's `example_cuts`, e.g. token windows) the cut points are its:
    text -> byte offsets [start of piece 0, end of piece 0 = start of piece 1, …]; it drops
    short tails itself (only whitespace-only pieces are dropped here).
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

    pieces = _Pieces()
    min_bytes = example_bytes // 2
    texts = documents["text"].to_arrow()  # each document's UTF-8 bytes are read in place, never as a str
    for row, (domain, doc_id) in enumerate(documents.select("domain", "doc_id").iter_rows()):
        data = texts[row].as_buffer() if texts[row].is_valid else pa.py_buffer(b"")
        if cutter is not None:
            cuts, least = (cutter(str(memoryview(data), "utf-8")) if len(data) else []), 0
        elif whole_documents:
            cuts, least = ([0, len(data)] if len(data) else []), 0
        else:
            cuts, least = _chunk_cuts(memoryview(data), example_bytes), min_bytes
        pieces.add(row, domain, doc_id, data, cuts, least)
    return pieces.frame(with_dirt_columns(documents))


class _Pieces:
    """The examples cut so far, held as Arrow strings and flat integer arrays (no Python object
    per example), so cutting a document costs about its own size in memory."""

    def __init__(self):
        self.texts, self.digests = [], bytearray()
        self.rows, self.ids, self.offsets, self.sizes = (array("q") for _ in range(4))

    def add(self, row: int, domain: str, doc_id: str, data: pa.Buffer, cuts: list[int], min_bytes: int) -> None:
        """Keeps the pieces data[cuts[i]:cuts[i+1]] that are long enough and not whitespace-only;
        chunk indices (and so ids) count the dropped pieces too."""
        kept, view = [], memoryview(data)
        for index, (start, end) in enumerate(zip(cuts, cuts[1:])):
            piece = view[start:end]
            if len(piece) < min_bytes or str(piece, "utf-8").isspace():
                continue
            kept.append(index)
            self.ids.append(example_id(domain, doc_id, index))
            self.offsets.append(start)
            self.sizes.append(end - start)
            self.digests += hashlib.sha1(piece).digest()
        if not kept:
            return
        self.rows.extend([row] * len(kept))
        offsets = pa.py_buffer(np.asarray(cuts, dtype=np.int64).tobytes())
        every = pa.LargeStringArray.from_buffers(len(cuts) - 1, offsets, data)
        if kept == list(range(len(kept))):  # usually only a short tail is dropped: a view, no copy
            self.texts.append(every.slice(0, len(kept)))
        else:
            self.texts.append(every.take(pa.array(kept, pa.int64())))

    def frame(self, documents: pl.DataFrame) -> pl.DataFrame:
        """The examples as an EXAMPLE_SCHEMA frame, in document order then offset order."""
        if not self.texts:
            return pl.DataFrame(schema=EXAMPLE_SCHEMA)
        rows = pl.Series(np.frombuffer(self.rows, dtype=np.int64))
        text = pl.Series("text", pa.concat_arrays(self.texts)).cast(pl.Utf8)
        self.texts = []
        digests = pl.Series(pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(20), len(self.ids), [None, pa.py_buffer(bytes(self.digests))])).cast(pl.Binary)
        frame = pl.DataFrame({
            "example_id": np.frombuffer(self.ids, dtype=np.int64),
            "domain": documents["domain"].gather(rows), "source": documents["source"].gather(rows),
            "doc_id": documents["doc_id"].gather(rows), "offset": np.frombuffer(self.offsets, dtype=np.int64),
            "text": text, "n_bytes": np.frombuffer(self.sizes, dtype=np.int64),
            "content_sha1": digests.bin.encode("hex"),
            **{column: documents[column].gather(rows) for column in DIRT_COLUMNS}})
        return frame.cast(EXAMPLE_SCHEMA)


def _chunk_cuts(data: memoryview, limit: int) -> list[int]:
    """Return the greedy cut points [0, …, len(data)] of pieces of at most `limit` bytes, each at a
    character start.

    A cut backs off over at most 3 UTF-8 continuation bytes (0b10xxxxxx), so the work is one
    step per piece and the memory one integer per piece, whatever the document's length.
    """
    n = len(data)
    if n == 0:
        return []
    if np.frombuffer(data, dtype=np.uint8).max() < 0x80:  # ASCII: every byte starts a character
        return list(range(0, n, limit)) + [n]
    cuts, start = [0], 0
    while start < n:
        end = min(start + limit, n)
        while end < n and data[end] & 0xC0 == 0x80:  # > start, as limit >= 4 >= any character's length
            end -= 1
        cuts.append(end)
        start = end
    return cuts

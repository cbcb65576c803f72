"""Size limits of corpus ingestion, and the stream that enforces them while a file is read.

A corpus may come from anyone: a record, a file and a compressed file's expansion are all
bounded (`[corpus] max_record_bytes`, `max_file_bytes`, `max_decompression_ratio`), and
each is checked while reading, so a decompression bomb or a runaway line is refused after
reading about one limit's worth of bytes, never after reading it whole.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass

from .errors import CorpusError

# a small, highly compressible file (a few repeated lines) is not a bomb: the ratio only
# counts once the output passes this many bytes
RATIO_FLOOR_BYTES = 1 << 20


@dataclass(frozen=True)
class IngestLimits:
    max_record_bytes: int = 64 * 2**20  # one JSON line, or one Parquet row's text, in bytes
    max_file_bytes: int = 16 * 2**30  # one file, after decompression
    max_decompression_ratio: float = 200.0  # decompressed / compressed bytes of a .gz file

    @classmethod
    def from_params(cls, params) -> IngestLimits:
        """The limits of a CorpusParams."""
        return cls(params.max_record_bytes, params.max_file_bytes, params.max_decompression_ratio)


def open_limited(file, limits: IngestLimits) -> io.BufferedReader:
    """A binary stream of the file's content (decompressed for .gz) that raises CorpusError naming
    the file as soon as it passes `max_file_bytes` or the decompression ratio."""
    stored = file.size()
    if not file.name.endswith(".gz") and stored > limits.max_file_bytes:
        raise CorpusError(f"{file}: {stored} bytes, more than corpus.max_file_bytes = {limits.max_file_bytes}; "
                          "split the file or raise the limit.")
    raw = _Counting(file.open())
    if not file.name.endswith(".gz"):
        return io.BufferedReader(raw, 1 << 16)
    return io.BufferedReader(_Inflating(raw, file, limits), 1 << 16)


class _Counting(io.RawIOBase):
    """Counts the stored bytes read so far."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.stream.readinto(buffer)
        self.count += n or 0
        return n or 0

    def close(self) -> None:
        self.stream.close()
        super().close()


class _Inflating(io.RawIOBase):
    """gzip decompression that checks the output size and ratio as it goes."""

    def __init__(self, raw: _Counting, file, limits: IngestLimits):
        self.raw, self.file, self.limits, self.produced = raw, file, limits, 0
        self.gzip = gzip.GzipFile(fileobj=raw, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            n = self.gzip.readinto(buffer)
        except (OSError, EOFError, zlib.error) as e:
            raise CorpusError(f"{self.file}: cannot decompress ({e}); re-create the .gz file or "
                              "store it uncompressed as .jsonl.") from None
        self.produced += n
        if self.produced > self.limits.max_file_bytes:
            raise CorpusError(f"{self.file}: decompresses to more than corpus.max_file_bytes = "
                              f"{self.limits.max_file_bytes} bytes; split the file or raise the limit.")
        ratio = self.produced / max(self.raw.count, 1)
        if self.produced > RATIO_FLOOR_BYTES and ratio > self.limits.max_decompression_ratio:
            raise CorpusError(f"{self.file}: decompresses {ratio:.0f}× ({self.produced} bytes from "
                              f"{self.raw.count}), more than corpus.max_decompression_ratio = "
                              f"{self.limits.max_decompression_ratio:g}: refused as a likely decompression bomb; "
                              "raise the limit if the file is genuine.")
        return n

    def close(self) -> None:
        self.gzip.close()
        self.raw.close()
        super().close()


def read_lines(stream, file, limits: IngestLimits):
    """Yields (1-based line number, line bytes without the newline); a line longer than
    `max_record_bytes` is a CorpusError naming the file and line, raised before reading the rest."""
    n = 0
    while True:
        line = stream.readline(limits.max_record_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > limits.max_record_bytes and not (len(line) == limits.max_record_bytes + 1
                                                        and line.endswith(b"\n")):
            raise CorpusError(f"{file}: line {n} is longer than corpus.max_record_bytes = "
                              f"{limits.max_record_bytes} bytes; split the document or raise the limit.")
        yield n, line  # with its newline (JSON ignores it; stripping would copy the line)
        del line

"""The candidate pool the greedy reads: a sketch matrix in memory, or chunks streamed afresh per pass.

Streaming. `greedy.residual_greedy_streaming` runs the same code over a re-iterable sequence
of (example_ids, sketch block[, domains[, content]]) chunks (`StreamPool`), e.g. one per
shard from a polars scan. It holds the shortlists (≤ `max_rows_in_memory` rows), one chunk
and length-n vectors, never the pool; each redraw from the pool is one pass over the chunks
(the first pass computes cost, reach and constraint codes; `stats["passes_over_pool"]`
counts them). Because it is the same algorithm on the same rows, its selection equals the
in-memory one exactly. (The two-pass alternative — per-chunk shortlists, then a greedy on
their union — needs a bound on every left-out row over the whole run, which under a real
penalty keeps most rows.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

BLOCK_BYTES = 4 << 20  # sketch bytes per pass block: bounds temporaries (e.g. z² below) to ~4 MB


def sketch_dtype(z: np.ndarray) -> np.dtype:
    """Returns the dtype the greedy reads a sketch in: its own if float32/64, else float64."""
    return z.dtype if z.dtype in (np.float32, np.float64) else np.dtype(np.float64)


class MemoryPool:
    """The sketch matrix in memory, read in row blocks (views, not copies)."""

    def __init__(self, z: np.ndarray):
        self.z = np.ascontiguousarray(z, dtype=sketch_dtype(np.asarray(z)))
        self.n, self.k = self.z.shape
        self.dtype = self.z.dtype
        self.passes = 0

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (first row, sketch block) over one pass, in ~BLOCK_BYTES views."""
        self.passes += 1
        rows = max(256, BLOCK_BYTES // max(1, self.z.itemsize * self.k))
        for start in range(0, self.n, rows):
            yield start, self.z[start:start + rows]


class StreamPool:
    """Sketch chunks read afresh on every pass; the first pass also records ids and metadata."""

    def __init__(self, chunks: Callable[[], Iterable] | Iterable):
        if callable(chunks):
            self._open = chunks
        elif iter(chunks) is chunks:
            raise TypeError("streaming selection reads the pool more than once: pass a list of chunks or a "
                            "zero-argument callable returning a fresh iterator, not a one-shot iterator")
        else:
            self._open = lambda: iter(chunks)
        self.passes = 0
        self.n = self.k = self.dtype = None
        self.example_ids = self.domains = self.content = None

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (first row, sketch chunk) over one pass; checks later passes match the first."""
        first = self.passes == 0
        self.passes += 1
        ids, domains, content = [], [], []
        start = 0
        for chunk in self._open():
            chunk_ids, sketch = np.asarray(chunk[0]), np.asarray(chunk[1])
            if first:
                self.dtype = self.dtype or sketch_dtype(sketch)
                self.k = sketch.shape[1]
                ids.append(chunk_ids)
                domains.append(np.asarray(chunk[2]) if len(chunk) > 2 and chunk[2] is not None else None)
                content.append(np.asarray(chunk[3]) if len(chunk) > 3 and chunk[3] is not None else None)
            elif not np.array_equal(chunk_ids, self.example_ids[start:start + len(chunk_ids)]):
                raise ValueError("chunks changed between passes: every pass must yield the same rows in "
                                 "the same order")
            if len(chunk_ids) != len(sketch) or sketch.ndim != 2 or sketch.shape[1] != self.k:
                raise ValueError(f"a chunk holds {len(chunk_ids)} ids and a sketch of shape {sketch.shape}; "
                                 f"expected one row of width {self.k} per id")
            yield start, np.ascontiguousarray(sketch, dtype=self.dtype)
            start += len(chunk_ids)
        if first:
            self.n = start
            self.example_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            self.domains = concat_optional(domains)
            self.content = concat_optional(content)
        elif start != self.n:
            raise ValueError("chunks changed between passes: a later pass yielded a different row count")


def concat_optional(parts: list) -> np.ndarray | None:
    """Returns the chunks' metadata joined, or None when no chunk has any."""
    if not parts or all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError("domains/content must be given for every chunk or for none")
    return np.concatenate(parts)

"""Exact Jaccard similarity of texts over character shingles: `max_jaccard` and `near_duplicate_mask`.

A text's shingles are its windows of `k` consecutive characters (a text shorter than `k` is one
shingle, itself). Each shingle is hashed to 64 bits (a polynomial over its code points, computed
for every window of every text at once with numpy), the distinct hashes numbered, and each text
becomes a row of a binary scipy.sparse matrix; one sparse product then gives every pair's
shared-shingle count, and Jaccard = shared / (|A| + |B| - shared). Only pairs sharing a shingle
are ever materialised, and the queries go through the product in chunks, so memory stays
bounded. The only approximation is a 64-bit hash collision between two different shingles.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_PRIME = np.uint64(0x9E3779B97F4A7C15 | 1)  # odd 64-bit multiplier: arithmetic wraps mod 2**64
_PAD = 0x110000  # one past the last code point: a short text's padding never equals a character
_CHUNK_ROWS = 2048  # query rows per sparse product


def max_jaccard(queries: list[str], against: list[str], k: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Returns (best, index): for each query, the highest Jaccard similarity (float64 in [0, 1]) to any
    `against` text and that text's position in `against` (the lowest on ties; 0 when no text shares a
    shingle, as every text then ties at 0.0). With `against` empty: best 0.0 and index -1 everywhere."""
    _check_k(k)
    best, index = np.zeros(len(queries)), np.full(len(queries), -1, dtype=np.int64)
    if not queries or not against:
        return best, index
    index[:] = 0
    rows = _shingle_rows(list(queries) + list(against), k)
    q, a = rows[:len(queries)], rows[len(queries):]
    q_sizes, a_sizes = _sizes(q), _sizes(a)
    a_t = a.T.tocsc()
    for start in range(0, q.shape[0], _CHUNK_ROWS):
        r, c, jac = _pair_jaccards(q[start:start + _CHUNK_ROWS], a_t, q_sizes[start:start + _CHUNK_ROWS], a_sizes)
        if r.size:
            order = np.lexsort((c, -jac, r))  # per row: highest Jaccard first, then the lowest index
            first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
            best[start + r[first]], index[start + r[first]] = jac[first], c[first]
    return best, index


def near_duplicate_mask(texts: list[str], threshold: float, k: int = 16) -> np.ndarray:
    """Returns a bool array: True where a text's Jaccard similarity with an earlier text of `texts` is
    ≥ `threshold`, so keeping `~mask` keeps the first text of every near-duplicate group."""
    _check_k(k)
    if not 0 < threshold <= 1:
        raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}.")
    mask = np.zeros(len(texts), dtype=bool)
    if len(texts) < 2:
        return mask
    rows = _shingle_rows(list(texts), k)
    sizes = _sizes(rows)
    rows_t = rows.T.tocsc()
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        r, c, jac = _pair_jaccards(rows[start:start + _CHUNK_ROWS], rows_t, sizes[start:start + _CHUNK_ROWS], sizes)
        hit = (c < start + r) & (jac >= threshold)
        mask[start + r[hit]] = True
    return mask


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"shingle length k must be >= 1, got {k}.")


def _sizes(rows: sp.csr_matrix) -> np.ndarray:
    return np.diff(rows.indptr).astype(np.int64)


def _pair_jaccards(q: sp.csr_matrix, a_t: sp.csc_matrix, q_sizes: np.ndarray,
                   a_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, against column, Jaccard) of every pair of the chunk sharing at least one shingle."""
    shared = (q @ a_t).tocoo()
    r, c = shared.row.astype(np.int64), shared.col.astype(np.int64)
    counts = shared.data.astype(np.float64)
    return r, c, counts / (q_sizes[r] + a_sizes[c] - counts)


def _shingle_rows(texts: list[str], k: int) -> sp.csr_matrix:
    """A binary CSR matrix, one row per text and one column per distinct shingle hash."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    # UTF-32 gives one uint32 per code point, so text positions are character positions
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    windows = np.maximum(lengths - k + 1, 0)
    long_rows = np.repeat(np.arange(len(texts)), windows)
    # position of every window: its text's start plus its rank inside the text
    ranks = np.arange(long_rows.size) - np.repeat(np.cumsum(windows) - windows, windows)
    positions = starts[long_rows] + ranks
    hashes = np.zeros(positions.size, dtype=np.uint64)
    for j in range(k):
        hashes = hashes * _PRIME + codes[positions + j] + np.uint64(1)
    short = np.flatnonzero(lengths < k)
    padded = np.full((short.size, k), _PAD, dtype=np.uint64)
    for i, row in enumerate(short):
        padded[i, :lengths[row]] = codes[starts[row]:starts[row] + lengths[row]]
    short_hashes = np.zeros(short.size, dtype=np.uint64)
    for j in range(k):  # the same polynomial as a full window's, over the padded text
        short_hashes = short_hashes * _PRIME + padded[:, j] + np.uint64(1)
    all_rows = np.concatenate([long_rows, short]).astype(np.int64)
    columns, ids = np.unique(np.concatenate([hashes, short_hashes]), return_inverse=True)
    pairs = np.sort(all_rows * columns.size + ids.reshape(-1))
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]  # one entry per (text, distinct shingle)
    matrix = sp.csr_matrix((np.ones(pairs.size, dtype=np.int32), (pairs // columns.size, pairs % columns.size)),
                           shape=(len(texts), columns.size))
    matrix.sort_indices()
    return matrix

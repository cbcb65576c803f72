"""Curation: choose a budget of B pool examples that maximises the task-weighted surrogate.

The objective
-------------
At a fixed budget, size and normalisation N = N(B) are constants, so GRASP's objective is
    f(S) = Σ_t w_t Û_t(S) − const = N⟨v, s⟩ − N²‖s‖²_D,   s = Σ_{i∈S} z_i,
with v = Σ_t w_t b_t q_t and D = Σ_t w_t C_t (diagonal). Completing the square, this is
−‖N·s − r*‖²_D with target r* = D⁻¹v/2: matching pursuit on the residual r = r* − N·s.
Each greedy step adds the example with the largest gain
    g_i(s) = a_i − 2N²⟨z_i, D s⟩,   a_i = N⟨v, z_i⟩ − N²‖z_i‖²_D,
so redundant examples (aligned with what is already in S) lose value. With D = 0 it is
additive top-k by ⟨v, z_i⟩. Optional constraints: per-domain quotas, exclusion lists, one
example per content hash.

Three ways to run the greedy (`method=`)
----------------------------------------
- "exact": recompute all n gains every step, O(B·n·k). The reference.
- "lazy": the same selection as "exact", row for row, usually at a fraction of the cost.
  f is NOT submodular: g_i(s) is linear in s and rises when z_i is anti-aligned with D·s,
  so the classic lazy greedy (a stale gain is an upper bound) would be wrong. Instead,
  Cauchy–Schwarz in the |D| geometry bounds how far a gain can move since it was computed
  at sum s_ref:
      |g_i(s) − g_i(s_ref)| = 2N²|⟨z_i, D(s − s_ref)⟩| ≤ reach_i · ‖s − s_ref‖_|D|,
      reach_i = 2N²‖z_i‖_|D|.
  A shortlist keeps the top-M candidates by gain at s_ref; everything left out is summarised
  by its largest gain G and largest reach R then, so each of them has gain ≤ G + R·‖s −
  s_ref‖_|D| now. While the shortlist's best gain beats that bound (minus the tie band
  below), the exact greedy's pick provably lies in the shortlist and a step costs O(M·k),
  not O(n·k); when the bound catches up, the shortlist is redrawn. Shortlists nest (pool →
  n/16 capped at 65536 → /8 → /8, `_lazy_sizes`), so most redraws read a small parent, and
  a level whose windows last under two steps doubles. When the bounds cannot keep up at all
  (strong penalties: one pick moves the others' gains by more than the gaps between them),
  lazy notices from the rows it evaluates and takes exact steps for a while, so it is never
  much slower than "exact" (nor faster, in that regime: bench/select.py "strong").
- "batched": windows of m = ⌈B/passes⌉ steps (64 passes by default, m ≤ 2048). Each window
  reads the pool once, keeps the top 2m candidates by current gain, and takes m exact
  greedy steps among them using their Gram matrix (O(m) per step). Approximate, because a
  candidate left out cannot overtake until the next window. Measured: ≥ 99.85% of the exact
  objective on small anti-aligned problems (tests), ≈ 99.95% at n = 10⁴–10⁵ under a strong
  penalty (bench/select.py); with B ≤ passes it is the exact greedy. Its cost does not
  depend on the penalty: ~passes full passes plus O(B·m).

Default: "lazy", because it is the exact greedy — the same rows in the same order as
"exact", which tests and reproducible curation rely on — and it is never much slower than
"exact" while 3× (10⁴ rows) to ~300× (10⁶ rows, predicted) faster under a moderate
penalty (bench/select.py). "batched" is the fastest method whose selections
match the exact ones on small problems (identical when B ≤ passes, within 0.15% of the
objective otherwise), and the one to use for 10⁶-row pools under strong penalties, where
exact certification cannot keep up (bench/select.py: lazy ≈ exact there).

Memory: nothing n×n is formed. Extra memory is the shortlists' rows (≤ n/8, plus their
draw's transient copies; typically ≪ the sketch), 4 MB block temporaries, a batched
window's Gram matrix (≤ 4096² floats) and a few length-n vectors (cost, reach, and a 0/−inf
penalty that encodes the constraints). bench/select.py: peak ≈ 1.25× the sketch at 10⁶,
the sketch included. Matvecs run on one BLAS thread (see `_single_threaded_blas`).

Ties and floating point. Sketches are used in their own dtype (float32 sketches stay
float32: BLAS matvecs, half the memory); s, bounds and gains are float64. A gain is computed
as ⟨z_i, u⟩ − cost_i with u = N·v − 2N²·D·s formed in float64, so the alignment and the
penalty cancel in u before the matvec and its rounding scales with the residual ‖u‖.
That rounding still depends on how a matvec was blocked, so every method treats gains
within tol = 2(k+2)·ε·max‖z_i‖·‖u‖ of the best (a rigorous bound) as tied and takes the
lowest row. That makes exact, lazy and streaming agree row for row, duplicates included.

Streaming. `residual_greedy_streaming` runs the same code over a re-iterable sequence of
(example_ids, sketch block[, domains[, content]]) chunks, e.g. one per shard from a polars
scan. It holds the shortlists (≤ `max_rows_in_memory` rows), one chunk and length-n
vectors, never the pool; each redraw from the pool is one pass over the chunks (the first
pass computes cost, reach and constraint codes; `stats["passes_over_pool"]` counts them). Because it is
the same algorithm on the same rows, its selection equals the in-memory one exactly. (The
two-pass alternative — per-chunk shortlists, then a greedy on their union — needs a bound
on every left-out row over the whole run, which under a real penalty keeps most rows.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from .surrogate import NORMALISATIONS, grasp_subset_utility

METHODS = ("exact", "lazy", "batched")
BLOCK_BYTES = 4 << 20  # sketch bytes per pass block: bounds temporaries (e.g. z² below) to ~4 MB
GRAM_ROWS = 4096  # batched: at most this many shortlisted rows per window, so G ≤ 64 MB in float32


@dataclass(frozen=True)
class SelectionParams:
    budget_fraction: float = 0.1
    random_seeds: tuple[int, ...] = (0, 1, 2)
    task_weights: dict[str, float] = field(default_factory=dict)  # missing tasks weigh 1
    # "utility_std": each task's weight is divided by the spread of its retrained utility over
    # the fit subsets, so the objective adds standardised gains and a task whose loss moves a
    # lot (a script the rest of the pool lacks) cannot take the whole budget; "none": raw utility
    task_scale: str = "utility_std"
    max_per_domain: int = 0  # 0 = no quota
    exclude_example_ids: tuple[int, ...] = ()
    dedup_content: bool = True
    greedy: str = "lazy"  # exact | lazy (same rows as exact) | batched (approximate, fastest at 10⁶)
    # pools with a `label` column (classification workloads): grasp, grad_dot and datamodel take at
    # most ceil(budget / labels) per label; gradients at θ₀ otherwise pile onto the worst-fitted class
    balance_labels: bool = True
    # rounds of multiplicative task re-weighting (0 = off) until the surrogate predicts every task
    # at least as good under the grasp selection as under a random selection of the same budget
    protect_rounds: int = 10
    protect_rate: float = 1.0  # log-weight step per standardised unit of predicted shortfall
    # the predicted gain over random a task must reach, in units of its utility spread: a margin
    # for the surrogate's own error (it over-predicts tasks whose loss is steep in their data share)
    protect_margin: float = 0.5
    # trust region: utility (nats) the grasp selection pays per squared standard deviation its mean
    # sketch moves from random selections' (on the coordinates the surrogate uses); 0 = off
    trust_region: float = 1e-3


@dataclass
class Selection:
    rows: np.ndarray  # pool row indices in selection order
    gains: np.ndarray  # objective gain of each step (score for top-k methods)
    example_ids: np.ndarray | None = None  # streaming selections: the example ids of `rows`
    stats: dict = field(default_factory=dict)  # passes over the pool, shortlist redraws, ...


def task_weight_vector(tasks: list[str], weights: dict[str, float]) -> np.ndarray:
    """Returns normalised task weights (missing tasks weigh 1)."""
    unknown = set(weights) - set(tasks)
    if unknown:
        raise ValueError(f"task_weights names unknown tasks {sorted(unknown)}; tasks are {tasks}")
    w = np.array([float(weights.get(t, 1.0)) for t in tasks])
    if not np.isfinite(w).all() or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"task_weights must be finite, non-negative and not all zero; got {weights}")
    return w / w.sum()


def grasp_objective(grasp_params: list[dict], task_sketch: np.ndarray, weights: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (v, D): the weighted alignment vector (k,) and penalty diagonal (k,).

    A surrogate fitted on some sketch columns only (`sketch_range` [start, stop): one
    checkpoint's block, or a prefix `sketch_dim`) contributes only to those coordinates;
    the rest of v and D is zero.
    """
    v, d = np.zeros(k), np.zeros(k)
    for w, p, q in zip(weights, grasp_params, task_sketch):
        start, stop = p.get("sketch_range") or (0, p.get("sketch_dim") or k)
        v[start:stop] += w * p["b"] * np.asarray(q, float)[start:stop]
        d[start:stop] += w * np.broadcast_to(np.asarray(p["penalty"], float), (stop - start,))
    return v, d


def _allowed_mask(n: int, excluded: np.ndarray | None) -> np.ndarray:
    allowed = np.ones(n, bool)
    if excluded is not None:
        allowed[excluded] = False
    return allowed


# -----------------------------------------------------------------------------
# the pool: whole in memory, or streamed in chunks


def _sketch_dtype(z: np.ndarray) -> np.dtype:
    return z.dtype if z.dtype in (np.float32, np.float64) else np.dtype(np.float64)


class _MemoryPool:
    """The sketch matrix in memory, read in row blocks (views, not copies)."""

    def __init__(self, z: np.ndarray):
        self.z = np.ascontiguousarray(z, dtype=_sketch_dtype(np.asarray(z)))
        self.n, self.k = self.z.shape
        self.dtype = self.z.dtype
        self.passes = 0

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        self.passes += 1
        rows = max(256, BLOCK_BYTES // max(1, self.z.itemsize * self.k))
        for start in range(0, self.n, rows):
            yield start, self.z[start:start + rows]


class _StreamPool:
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
        first = self.passes == 0
        self.passes += 1
        ids, domains, content = [], [], []
        start = 0
        for chunk in self._open():
            chunk_ids, sketch = np.asarray(chunk[0]), np.asarray(chunk[1])
            if first:
                self.dtype = self.dtype or _sketch_dtype(sketch)
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
            self.domains = _concat_optional(domains)
            self.content = _concat_optional(content)
        elif start != self.n:
            raise ValueError("chunks changed between passes: a later pass yielded a different row count")


def _concat_optional(parts: list) -> np.ndarray | None:
    if not parts or all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError("domains/content must be given for every chunk or for none")
    return np.concatenate(parts)


# -----------------------------------------------------------------------------
# per-row terms and constraints


@dataclass
class _Terms:
    """What the greedy needs per row besides its sketch row, computed in one pass.

    Gains are computed as g_i(s) = ⟨z_i, u(s)⟩ − cost_i with u(s) = N·v − 2N²·D·s: the
    cancellation between alignment and penalty happens once, in float64, in the k-vector u,
    so the n-row matvec's rounding scales with ‖u‖ (the residual), not with ‖N·v‖.
    """

    cost: np.ndarray  # (n,) N²‖z_i‖²_D, the self-penalty of adding z_i
    reach: np.ndarray  # (n,) 2N²‖z_i‖_|D|: how fast g_i can move per unit of ‖Δs‖_|D|
    zmax: float  # max_i ‖z_i‖₂
    rtol: float  # relative rounding of a matvec row, (k+2)·ε of the sketch dtype
    nv: np.ndarray  # N·v
    wscale: np.ndarray  # 2N²·d
    dabs: np.ndarray  # |d|: the geometry of ‖·‖_|D|

    def __post_init__(self):
        self.reach_max = float(self.reach.max(initial=0.0))

    def direction(self, s: np.ndarray) -> np.ndarray:
        """Returns u(s) = N·v − 2N²·D·s (float64): gains are z @ u − cost."""
        return self.nv - self.wscale * s

    def tol(self, u: np.ndarray) -> float:
        """Returns the tie band: two computations of a gain may differ by this much (rounding)."""
        return 2 * self.rtol * self.zmax * float(np.sqrt(u @ u))

    def norm(self, x: np.ndarray) -> float:
        return float(np.sqrt(x * x @ self.dabs))


def _row_terms(pool, v: np.ndarray, d: np.ndarray, scale: float) -> _Terms:
    """One pass over the pool; returns the per-row terms (float64, length n)."""
    cost, reach, zmax, buffer = [], [], 0.0, None
    for _, zb in pool.blocks():
        dt = zb.dtype
        if buffer is None or len(buffer) < len(zb) or buffer.dtype != dt:
            buffer = np.empty_like(zb)
        sq = np.multiply(zb, zb, out=buffer[:len(zb)])  # one block-sized buffer, never n×k
        cost.append((sq @ (scale ** 2 * d).astype(dt)).astype(np.float64))
        reach.append(2 * abs(scale) * np.sqrt((sq @ (scale ** 2 * np.abs(d)).astype(dt)).astype(np.float64)))
        if len(zb):
            zmax = max(zmax, float(np.sqrt((sq @ np.ones(len(v), dt)).max())))
    dtype = pool.dtype or np.float64
    return _Terms(np.concatenate(cost) if cost else np.zeros(0), np.concatenate(reach) if reach else np.zeros(0),
                  zmax * (1 + 1e-6), (len(v) + 2) * float(np.finfo(dtype).eps), scale * v, 2 * scale ** 2 * d,
                  np.abs(d))


def _codes(values: np.ndarray) -> np.ndarray:
    """Returns integer codes 0..m−1 for any array of hashable values (None included)."""
    try:
        return np.unique(values, return_inverse=True)[1].reshape(-1)
    except TypeError:  # unorderable mixes such as str and None
        table: dict = {}
        return np.fromiter((table.setdefault(x, len(table)) for x in values.tolist()), np.int64, len(values))


class _Constraints:
    """Which rows may still be taken: not taken or excluded, domain under quota, content unseen.

    The state is `penalty`, 0 for a row that may be taken and −inf for one that may not, so
    masking gains is one add. Taking a row touches only that row and its content duplicates;
    a domain filling up touches its rows once. No O(n) work per step.
    """

    def __init__(self, n: int, domains=None, max_per_domain: int = 0, content=None, excluded=None):
        self.penalty = np.zeros(n)
        if excluded is not None:
            self.penalty[excluded] = -np.inf
        self.domain = self.content = None
        if domains is not None and max_per_domain:
            self.domain = _codes(np.asarray(domains))
            self.domain_count = np.zeros(self.domain.max(initial=-1) + 1, np.int64)
            self.domain_open = np.ones(len(self.domain_count), bool)
            self.quota = int(max_per_domain)
        if content is not None:
            self.content = _codes(np.asarray(content))
            self._by_content = np.argsort(self.content, kind="stable")  # rows grouped by hash
            self._content_start = np.searchsorted(self.content[self._by_content],
                                                  np.arange(self.content.max(initial=-1) + 2))

    def take(self, row: int) -> bool:
        """Marks `row` taken; returns True if that also closed other rows (quota, duplicates)."""
        self.penalty[row] = -np.inf
        closed = False
        if self.domain is not None:
            code = self.domain[row]
            self.domain_count[code] += 1
            if self.domain_count[code] >= self.quota and self.domain_open[code]:
                self.domain_open[code] = False
                self.penalty[self.domain == code] = -np.inf
                closed = True
        if self.content is not None:
            code = self.content[row]
            start, stop = self._content_start[code], self._content_start[code + 1]
            if stop - start > 1:
                self.penalty[self._by_content[start:stop]] = -np.inf
                closed = True
        return closed


# -----------------------------------------------------------------------------
# shortlists


@dataclass
class _Shortlist:
    """Top candidates by gain at s_ref, with a bound on every allowed candidate left out."""

    idx: np.ndarray  # pool rows, ascending
    z: np.ndarray  # their sketch rows (a copy, in the pool's dtype)
    cost: np.ndarray  # their cost_i
    gain: np.ndarray  # their gains at s_ref
    s_ref: np.ndarray  # the selection sum when drawn
    out_gain: float  # largest gain at s_ref among allowed candidates left out (−inf: none)
    out_reach: float  # largest reach among them (an upper bound)


def _draw(blocks, size: int, gap: float, reach: float, terms: _Terms, s: np.ndarray, k: int,
          dtype) -> _Shortlist:
    """Keeps the allowed candidates with gain ≥ min(size-th largest, best − gap).

    `blocks` yields (rows, sketch rows, gains) in ascending row order, rows being a slice of
    the pool or an index array, and gains −inf where a row may not be taken. The `gap` keeps
    every near-tie of the best inside, so the left-out bound starts strictly below the tie
    band. `reach` bounds the reach of every row of the parent. At most 4·size rows are kept
    (massive exact ties beyond that are left out, lowest rows kept); memory ~6·size rows.
    """
    kept: list[tuple] = []
    held, threshold = 0, -np.inf
    out_gain = -np.inf

    def tighten(gains):  # raise the threshold: it only ever rises towards its final value
        nonlocal threshold
        if len(gains) > size:
            kth = np.partition(gains, len(gains) - size)[len(gains) - size]
            threshold = max(threshold, min(float(kth), float(gains.max()) - gap))

    def keep_mask(gains):
        """Returns which gains to keep; folds the largest one left out into the bound."""
        nonlocal out_gain
        keep = gains >= threshold if threshold > -np.inf else gains > -np.inf
        out_gain = max(out_gain, float(np.max(gains, where=~keep, initial=-np.inf)))  # no copy
        return keep

    def prune():
        nonlocal kept, held, out_gain
        tighten(np.concatenate([part[3] for part in kept]))
        parts, kept = kept, []
        while parts:  # filter each part before joining them: the peak stays near the kept rows
            rows, zs, costs, gains = parts.pop(0)
            keep = keep_mask(gains)
            kept.append((rows, zs, costs, gains) if keep.all() else (rows[keep], zs[keep], costs[keep], gains[keep]))
        if len(kept) > 1:
            kept = [tuple(np.concatenate(parts) for parts in zip(*kept))]
        rows, zs, costs, gains = kept[0]
        if len(rows) > 4 * size:  # only exact ties get here: keep the lowest rows among them
            keep = np.zeros(len(rows), bool)
            keep[np.lexsort((rows, -gains))[:4 * size]] = True
            out_gain = max(out_gain, float(np.max(gains, where=~keep, initial=-np.inf)))
            kept = [(rows[keep], zs[keep], costs[keep], gains[keep])]
        held = len(kept[0][0])

    for rows, zb, gains in blocks:
        above = gains >= threshold if threshold > -np.inf else gains > -np.inf
        if np.count_nonzero(above) > size:
            tighten(gains[above])
        keep = keep_mask(gains)
        if keep.any():
            kept_rows = np.flatnonzero(keep) + rows.start if isinstance(rows, slice) else rows[keep]
            kept.append((kept_rows, zb[keep], terms.cost[rows][keep], gains[keep]))
            held += len(kept_rows)
        if held > 2 * size:
            prune()
    if not kept:
        empty = np.zeros(0)
        return _Shortlist(np.zeros(0, np.int64), np.zeros((0, k), dtype), empty, empty, s.copy(), out_gain,
                          reach)
    prune()
    rows, zs, costs, gains = kept[0]
    return _Shortlist(rows, zs, costs, gains, s.copy(), out_gain, reach if out_gain > -np.inf else 0.0)


def _pool_gains(pool, terms: _Terms, cons: _Constraints, u: np.ndarray):
    """Yields (rows as a slice, sketch block, gains; −inf where not allowed) over one pass."""
    for start, zb in pool.blocks():
        rows = slice(start, start + len(zb))
        yield rows, zb, (cons.penalty[rows] - terms.cost[rows]) + zb @ u.astype(zb.dtype)


def _shortlist_gains(short: _Shortlist, cons: _Constraints, u: np.ndarray) -> np.ndarray:
    """Returns the shortlist's current gains, −inf where a row may not be taken."""
    return (cons.penalty[short.idx] - short.cost) + short.z @ u.astype(short.z.dtype)


def _lazy_sizes(n: int) -> list[int]:
    """Initial shortlist sizes, outermost first: min(65536, n/16), then /8 down to ≥ 512.

    A redraw costs O(parent·k) and a step O(innermost·k); sizes a factor 8 apart balance the
    two when windows last a fair fraction of a shortlist (bench/select.py tried /4 and /16).
    `_lazy` then grows any level whose windows turn out too short.
    """
    sizes, size = [], min(65536, max(n // 16, 4096))
    while 512 <= size < n:
        sizes.append(size)
        size //= 8
    return sizes or [max(n, 1)]


# -----------------------------------------------------------------------------
# the three methods


def _exact(pool, terms, cons, budget):
    """Returns (rows, gains, stats): every step recomputes every gain in one pass."""
    s = np.zeros(len(terms.nv))
    rows, gains = [], []
    while len(rows) < budget:
        u = terms.direction(s)
        g = np.concatenate([g for _, _, g in _pool_gains(pool, terms, cons, u)])
        best = g.max(initial=-np.inf)
        if best == -np.inf:
            break  # nothing allowed is left
        row = int(np.argmax(g >= best - terms.tol(u)))  # lowest row within the tie band
        rows.append(row)
        gains.append(float(g[row]))
        s += _row(pool, row)
        cons.take(row)
    return rows, gains, {}


def _row(pool, row: int) -> np.ndarray:
    if isinstance(pool, _MemoryPool):
        return pool.z[row].astype(np.float64)
    for start, zb in pool.blocks():  # the exact method streamed: a pass per step, as it says
        if start <= row < start + len(zb):
            return zb[row - start].astype(np.float64)
    raise IndexError(row)


def _lazy(pool, terms, cons, budget, sizes, max_rows=None):
    """Returns (rows, gains, stats) of the exact greedy over nested shortlists (module doc).

    A pick is taken only when every level's left-out bound is below the best gain minus the
    tie band, so the selection is the exact greedy's whatever the sizes; sizes only move cost.
    """
    k = len(terms.nv)
    sizes = list(sizes)
    cap = min(max(pool.n // 8, sizes[0]), max_rows or pool.n)  # how far the outermost level may grow
    in_memory = isinstance(pool, _MemoryPool)
    s = np.zeros(k)
    levels: list[_Shortlist] = []
    # per level, kept as arrays so that a step checks every bound in a few vector ops
    refs, out_gain, out_reach = np.zeros((0, k)), np.zeros(0), np.zeros(0)
    drawn_at: list[int] = []  # the step at which each level was last drawn
    live = [None]  # the innermost level's −cost_i, or −inf where a row may no longer be taken
    rows, gains = [], []
    stats = {"redraws": [0] * len(sizes), "exact_steps": 0}
    work, exact_until, backoff, checked = 0, 0, 256, 0  # rows evaluated since the last check; exact mode
    stuck = 0  # redraws since the last pick

    def redraw(j, u, tol):
        nonlocal refs, out_gain, out_reach, work
        del levels[j:], drawn_at[j:]
        for i in range(j, len(sizes)):
            if i == 0:
                parent, reach = _pool_gains(pool, terms, cons, u), terms.reach_max
                work += pool.n
            else:
                p = levels[i - 1]
                parent, reach = [(p.idx, p.z, _shortlist_gains(p, cons, u))], float(terms.reach[p.idx].max(initial=0))
                work += len(p.idx)
            levels.append(_draw(parent, sizes[i], 4 * tol, reach, terms, s, k, pool.dtype))
            drawn_at.append(len(rows))
            stats["redraws"][i] += 1
        use_levels()

    def use_levels():
        nonlocal refs, out_gain, out_reach
        refs = np.array([lv.s_ref for lv in levels])
        out_gain = np.array([lv.out_gain for lv in levels])
        out_reach = np.array([lv.out_reach for lv in levels])
        live[0] = cons.penalty[levels[-1].idx] - levels[-1].cost

    def grow(j):
        # a level whose own bound went stale within a step is too small for how fast gains move
        # here (strong penalties): double it, up to half its parent
        limit = cap if j == 0 else sizes[j - 1] // 2
        if len(rows) - drawn_at[j] < 2 and sizes[j] * 2 <= limit:
            sizes[j] *= 2

    def whole_pool():
        # exact mode: one "shortlist" that is the in-memory pool itself (a view, no copy) and
        # leaves nothing out, so every step evaluates every row, like method="exact"
        levels[:] = [_Shortlist(np.arange(pool.n), pool.z, terms.cost, terms.cost, s.copy(), -np.inf, 0.0)]
        drawn_at[:] = [len(rows)]
        use_levels()

    u = terms.direction(s)
    redraw(0, u, terms.tol(u))
    while len(rows) < budget:
        if in_memory and len(rows) % 32 == 0 and len(rows) > checked:
            # lazy costs more than exact when gains move faster than its bounds can follow
            # (strong penalties); then take exact steps for a while (same picks), and retry
            checked = len(rows)
            if len(rows) == exact_until:
                redraw(0, u, terms.tol(u))
            elif len(rows) > exact_until and work > 32 * pool.n:
                exact_until, backoff = len(rows) + backoff, backoff * 2
                whole_pool()
            work = 0
        inner = levels[-1]
        u = terms.direction(s)
        g = live[0] + inner.z @ u.astype(inner.z.dtype)
        best = g.max(initial=-np.inf)
        tol = terms.tol(u)
        work += len(g)
        if best == -np.inf:  # the innermost shortlist ran dry: redraw from the outermost level with leftovers
            leftovers = np.flatnonzero(out_gain > -np.inf)
            if not len(leftovers):
                break  # nothing allowed is left anywhere
            redraw(int(leftovers[0]), u, tol)
            continue
        # every left-out candidate of level j has gain ≤ out_gain + out_reach·‖s − s_ref‖_|D|
        stale = out_gain + out_reach * np.sqrt(np.square(refs - s) @ terms.dabs) >= best - 3 * tol
        if stale.any():
            stuck += 1
            if stuck > 4 * len(sizes) + 4:  # only massive exact ties keep every redraw stale
                if not in_memory:
                    raise RuntimeError("lazy selection cannot certify a pick among more than 4× the "
                                       "shortlist of tied candidates; use method='exact' or 'batched'")
                whole_pool()
                exact_until = (len(rows) // 32 + 2) * 32  # back to lazy at a later check
                continue
            j = int(np.argmax(stale))
            grow(j)
            redraw(j, u, tol)
            continue
        stuck = 0
        stats["exact_steps"] += int(len(g) == pool.n)
        pick = int(np.argmax(g >= best - tol))  # lowest row within the tie band
        row = int(inner.idx[pick])
        rows.append(row)
        gains.append(float(g[pick]))
        s += inner.z[pick]
        live[0][pick] = -np.inf
        if cons.take(row):  # a quota filled or the row had duplicates: re-mask the innermost level
            live[0] = cons.penalty[inner.idx] - inner.cost
    stats["shortlist_sizes"] = sizes
    return rows, gains, stats


def _batched(pool, terms, cons, budget, passes, width, max_rows=None):
    """Returns (rows, gains, stats): windows of m greedy steps on a shortlist drawn per pass.

    Each window reads the pool once, keeps the top width·m candidates by current gain, and
    takes m exact greedy steps among them using their Gram matrix G = 2N²·Z D Zᵀ, so a step
    costs O(width·m) rather than O(width·m·k). Candidates left out are not looked at until
    the next window: that is what makes it approximate. `certified_steps` counts the picks
    the Cauchy–Schwarz bound (module doc) proves to be the exact greedy's, given the history.
    """
    k = len(terms.nv)
    m = max(1, min(math.ceil(budget / passes), int(GRAM_ROWS // width)))  # G stays ≤ GRAM_ROWS² floats
    if max_rows:
        m = max(1, min(m, int(max_rows // width)))
    c2 = float(np.max(np.abs(terms.wscale) / np.maximum(terms.dabs, 1e-300)))  # 2N² (0 when D = 0)
    # with D ≥ 0, ‖s − s_ref‖_D (for the certificate) follows from G in O(1) per step
    incremental = bool(np.all(terms.wscale >= 0)) and c2 > 0
    s = np.zeros(k)
    rows, gains = [], []
    stats = {"window": m, "certified_steps": 0}
    while len(rows) < budget:
        u = terms.direction(s)
        tol = terms.tol(u)  # the window's tie band: picks here are approximate anyway
        short = _draw(_pool_gains(pool, terms, cons, u), max(m, int(width * m)), 0.0, terms.reach_max, terms, s, k,
                      pool.dtype)
        if not len(short.idx):
            break  # nothing allowed is left
        z = short.z
        if incremental:  # z·√(2N²D) times its transpose: a symmetric product (syrk, half the flops)
            y = z * np.sqrt(terms.wscale).astype(z.dtype)
            gram = y @ y.T
        else:
            gram = (z * terms.wscale.astype(z.dtype)) @ z.T
        g = short.gain.copy()
        domain = cons.domain[short.idx] if cons.domain is not None else None
        content = cons.content[short.idx] if cons.content is not None else None
        delta2, s_now, picked = 0.0, s.copy(), []
        for _ in range(min(m, budget - len(rows))):
            best = g.max()
            if best == -np.inf:
                break  # the shortlist ran dry: draw the next window early
            pick = int(np.argmax(g >= best - tol))  # lowest row within the tie band
            row = int(short.idx[pick])
            bound = short.out_gain + short.out_reach * np.sqrt(max(delta2, 0.0))
            stats["certified_steps"] += int(bound < best - 3 * tol)
            rows.append(row)
            gains.append(float(g[pick]))
            picked.append(pick)
            cons.take(row)
            if incremental:  # ‖Δ + z_p‖²_D = ‖Δ‖² + 2⟨Δ, D z_p⟩ + ‖z_p‖²_D, read off gains and G
                delta2 += (2 * (short.gain[pick] - g[pick]) + gram[pick, pick]) / c2
            else:
                s_now += z[pick]
                delta2 = terms.norm(s_now - s) ** 2
            g -= gram[pick]  # every shortlisted gain after adding z_p: g_i −= 2N²⟨z_i, D z_p⟩
            g[pick] = -np.inf
            if domain is not None and not cons.domain_open[domain[pick]]:
                g[domain == domain[pick]] = -np.inf
            if content is not None:
                g[content == content[pick]] = -np.inf
        for pick in picked:  # the same summation order as the other methods
            s += z[pick]
    return rows, gains, stats


# -----------------------------------------------------------------------------
# public entry points


def _run(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes, batch_width,
         max_rows=None) -> tuple[list, list, dict]:
    """Returns (rows, gains, stats) of `method` over `pool`; cons_args(pool) gives the constraints."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {METHODS}")
    v, d, budget = np.asarray(v, float), np.asarray(d, float), int(budget)
    with _single_threaded_blas():
        terms = _row_terms(pool, v, d, float(scale))  # the first pass: for a stream, also ids and metadata
        cons = _Constraints(pool.n, **cons_args(pool))
        if pool.n == 0 or budget <= 0:
            rows, gains, stats = [], [], {}
        elif method == "exact":
            rows, gains, stats = _exact(pool, terms, cons, budget)
        elif method == "lazy":
            sizes = shortlist_sizes or _lazy_sizes(pool.n)
            if max_rows:
                sizes = [min(size, max_rows) for size in sizes]
            rows, gains, stats = _lazy(pool, terms, cons, budget, sizes, max_rows=max_rows)
        else:
            rows, gains, stats = _batched(pool, terms, cons, budget, batch_passes, batch_width, max_rows)
    return rows, gains, {"method": method, "passes_over_pool": pool.passes, **stats}


def _single_threaded_blas():
    """Matvecs here are small and memory-bound: BLAS threads spinning on a loaded machine cost
    far more than they gain (10-100× on 2 busy cores), so run the selection single-threaded."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it, BLAS keeps its own setting
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def residual_greedy(pool_sketch: np.ndarray, v: np.ndarray, d: np.ndarray, scale: float,
                    budget: int, *, domains: np.ndarray | None = None, max_per_domain: int = 0,
                    content: np.ndarray | None = None, excluded: np.ndarray | None = None,
                    method: str = "lazy", shortlist_sizes: list[int] | None = None,
                    batch_passes: int = 64, batch_width: float = 2.0) -> Selection:
    """Greedy maximisation of scale⟨v, s⟩ − scale²‖s‖²_D over an in-memory pool (module doc).

    Optional constraints: at most `max_per_domain` per domain, one example per content hash,
    never the `excluded` rows. `method`: "lazy" (default; the exact greedy's selection),
    "exact", or "batched" (approximate; `batch_passes` windows, shortlists of `batch_width`×
    the window). Returns a Selection of pool rows in pick order with each step's marginal
    gain, and `stats`; fewer than `budget` rows only if the constraints run out.
    """
    pool = _MemoryPool(pool_sketch)

    def cons_args(_):
        return dict(domains=domains, max_per_domain=max_per_domain, content=content, excluded=excluded)

    rows, gains, stats = _run(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes,
                              batch_width)
    return Selection(np.asarray(rows, np.int64), np.asarray(gains, float), stats=stats)


def residual_greedy_streaming(chunks: Callable[[], Iterable] | Iterable, v: np.ndarray, d: np.ndarray,
                              scale: float, budget: int, *, max_per_domain: int = 0,
                              excluded_ids: Iterable | None = None, dedup_content: bool = True,
                              method: str = "lazy", max_rows_in_memory: int = 65536,
                              shortlist_sizes: list[int] | None = None, batch_passes: int = 64,
                              batch_width: float = 2.0) -> Selection:
    """The greedy of `residual_greedy` over a pool that never has to fit in memory at once.

    `chunks` is a list, or a zero-argument callable returning a fresh iterator, of tuples
    (example_ids, sketch block[, domains[, content hashes]]); every pass must yield the same
    rows in the same order (checked). Rows are numbered in stream order. Holds at most about
    `max_rows_in_memory` sketch rows (the shortlists) plus one chunk and length-n vectors;
    each shortlist redraw from the pool is one pass (stats["passes_over_pool"]). Returns a
    Selection whose `rows` index the stream and `example_ids` name them; "lazy" and "exact"
    equal `residual_greedy` on the same pool row for row.
    """
    pool = _StreamPool(chunks)

    def cons_args(p):
        excluded = None
        if excluded_ids is not None:
            excluded = np.flatnonzero(np.isin(p.example_ids, np.asarray(list(excluded_ids))))
        return dict(domains=p.domains, max_per_domain=max_per_domain,
                    content=p.content if dedup_content else None, excluded=excluded)

    rows, gains, stats = _run(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes,
                              batch_width, max_rows=max_rows_in_memory)
    rows = np.asarray(rows, np.int64)
    return Selection(rows, np.asarray(gains, float), example_ids=pool.example_ids[rows], stats=stats)


def top_k(scores: np.ndarray, budget: int, excluded: np.ndarray | None = None, *,
          groups: np.ndarray | None = None, max_per_group: int = 0) -> Selection:
    """Additive selection: the `budget` highest scores (ties broken by row order), at most
    `max_per_group` from each value of `groups` when both are given."""
    masked = np.where(_allowed_mask(len(scores), excluded), scores, -np.inf)
    order = np.argsort(-masked, kind="stable")
    if groups is not None and max_per_group:
        order = order[_rank_within_group(_codes(np.asarray(groups))[order]) < max_per_group]
    order = order[:budget]
    order = order[np.isfinite(masked[order])]
    return Selection(order, scores[order])


def _rank_within_group(codes: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same code."""
    by_code = np.argsort(codes, kind="stable")
    sorted_codes = codes[by_code]
    rank = np.empty(len(codes), np.int64)
    rank[by_code] = np.arange(len(codes)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
    return rank


def label_quota(labels: np.ndarray, budget: int) -> int:
    """The per-label cap that balances a budget over the labels present: ceil(budget / labels)."""
    return -(-budget // max(1, len(np.unique(labels))))


def random_selection(n: int, budget: int, seed: int, excluded: np.ndarray | None = None) -> Selection:
    """A uniformly random selection of `budget` allowed rows (seeded)."""
    candidates = np.flatnonzero(_allowed_mask(n, excluded))
    rows = np.random.default_rng(seed).choice(candidates, size=min(budget, len(candidates)), replace=False)
    return Selection(rows, np.zeros(len(rows)))


def trust_region_terms(pool_sketch: np.ndarray, budget: int, scale: float, used: np.ndarray,
                       strength: float, excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Δv, ΔD) that add −strength·Σ_j (z̄_j − μ_j)²/σ_j² to the selection objective.

    z̄ = s/B is the selection's mean sketch, μ the allowed pool's mean and σ_j² the variance
    of z̄_j over random selections of B rows (without replacement), on the `used` coordinates.
    The surrogate was fitted on subsets near random composition; a selection far outside
    that region is an extrapolation it over-predicts (measured: tasks whose own data the
    selection thins out lose against random). Written in the objective's own form
    N⟨v, s⟩ − N²‖s‖²_D, the penalty is Δv = 2·strength·Tμ/(B·N), ΔD = strength·T/(B·N)²,
    T = diag(1/σ²) on `used`.
    """
    z = np.asarray(pool_sketch, float)[_allowed_mask(len(pool_sketch), excluded)]
    n = len(z)
    mean, var = z.mean(0), z.var(0) * (n - budget) / max(1, (n - 1) * budget)
    inverse = np.zeros(z.shape[1])
    live = used & (var > 0)
    inverse[live] = 1.0 / var[live]
    return 2 * strength * inverse * mean / (budget * scale), strength * inverse / (budget * scale) ** 2


def grasp_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                    weights: np.ndarray, budget: int, *, method: str = "lazy", trust_region: float = 0.0,
                    **constraints) -> Selection:
    """Residual-greedy selection under the fitted GRASP surrogates (normalisation at budget).

    Returns the Selection of `residual_greedy` (constraints: domains, max_per_domain, content,
    excluded); `method` as there, "lazy" by default because it equals the exact greedy.
    `trust_region` > 0 adds `trust_region_terms` on the coordinates the surrogates use.
    """
    v, d = grasp_objective(grasp_params, task_sketch, weights, pool_sketch.shape[1])
    scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
    if trust_region > 0:
        dv, dd = trust_region_terms(pool_sketch, budget, scale, (v != 0) | (d > 0), trust_region,
                                    constraints.get("excluded"))
        v, d = v + dv, d + dd
    return residual_greedy(pool_sketch, v, d, scale, budget, method=method, **constraints)


def predicted_utilities(grasp_params: list[dict], task_sketch: np.ndarray, sum_z: np.ndarray,
                        sizes: np.ndarray) -> np.ndarray:
    """(s, T) GRASP-predicted utility of every task for subsets given by sketch sums and sizes."""
    return np.column_stack([grasp_subset_utility(p, sum_z, sizes, q) for p, q in zip(grasp_params, task_sketch)])


def protected_grasp_selection(pool_sketch: np.ndarray, task_sketch: np.ndarray, grasp_params: list[dict],
                              weights: np.ndarray, budget: int, *, spread: np.ndarray, rounds: int = 10,
                              rate: float = 1.0, margin: float = 0.0, random_draws: int = 16, seed: int = 0,
                              method: str = "lazy", trust_region: float = 0.0, **constraints) -> Selection:
    """GRASP selection that leaves no task predicted below a random selection of the budget.

    The weighted objective can sacrifice a task whose data the others do not want (on the
    embedded corpus: Chinese, at a few examples, while random selections keep ~1/9 of the
    budget for it). So, group-DRO style, the selection is redone with multiplicative
    task weights. A task's predicted gain is its predicted utility minus its predicted
    utility under random selections (mean of `random_draws` seeded draws of the same budget
    from the allowed rows), in units of its utility spread `spread`; after each round a task
    whose gain is below `margin` gets its weight multiplied by exp(rate · (margin − gain)).
    The returned round is the one with the fewest tasks short, ties broken by the predicted
    gain under the caller's `weights`. Only the surrogate is consulted: no retrained outcome is read.
    `stats` records the rounds, the final weights and the predicted standardised gains.
    """
    weights = np.asarray(weights, float)
    excluded = constraints.get("excluded")
    candidates = np.flatnonzero(_allowed_mask(len(pool_sketch), excluded))
    rng = np.random.default_rng(seed)
    draws = [rng.choice(candidates, size=min(budget, len(candidates)), replace=False) for _ in range(random_draws)]
    z64 = np.asarray(pool_sketch, float)
    random_sums = np.stack([z64[rows].sum(0) for rows in draws])
    baseline = predicted_utilities(grasp_params, task_sketch, random_sums,
                                   np.array([len(r) for r in draws])).mean(0)
    current, best, best_key, history = weights.copy(), None, None, []
    for round_ in range(max(1, rounds + 1)):
        selection = grasp_selection(pool_sketch, task_sketch, grasp_params, current, budget, method=method,
                                    trust_region=trust_region, **constraints)
        predicted = predicted_utilities(grasp_params, task_sketch, z64[selection.rows].sum(0, keepdims=True),
                                        np.array([len(selection.rows)]))[0]
        gain = (predicted - baseline) / spread
        short = np.maximum(0.0, margin - gain)
        key = (-int(np.sum(short > 0)), float(weights @ gain))
        history.append({"round": round_, "tasks_short": int(np.sum(short > 0)), "weighted_gain": key[1]})
        if best_key is None or key > best_key:
            best, best_key = (selection, current.copy(), gain), key
        if not np.any(short > 0) or round_ == rounds:
            break
        current = current * np.exp(rate * short)
        current /= current.sum()
    selection, final_weights, gain = best
    selection.stats.update({"protect_rounds": len(history) - 1, "protect_history": history,
                            "protected_weights": final_weights.tolist(), "predicted_gain_vs_random": gain.tolist()})
    return selection

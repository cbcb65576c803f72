"""The residual greedy's entry points: an in-memory pool or a streamed one, any of the three methods.

Default: "lazy", because it is the exact greedy — the same rows in the same order as
"exact", which tests and reproducible curation rely on — and it is never much slower than
"exact" while 3× (10⁴ rows) to ~300× (10⁶ rows, predicted) faster under a moderate
penalty (bench/selection.py). "batched" is the fastest method: approximate (identical
when B ≤ passes; tests bound its loss at 0.5% of the exact objective on anti-aligned
problems and 0.2% on clustered ones, measured ≤ 0.14% and ≤ 0.10%), with work per pick about
constant in n at a fixed budget fraction, so it is the one to use for 10⁶-row pools under
strong penalties, where exact certification cannot keep up (bench/selection.py: lazy ≈
exact there).

Memory: nothing n×n is formed. Extra memory is the shortlists' rows (≤ n/8, plus their
draw's transient copies; typically ≪ the sketch), 4 MB block temporaries, a batched
window's Gram matrix ((2⌈√(B/64)⌉)² floats) and a few length-n vectors (cost, reach, a
0/−inf penalty that encodes the constraints; batched: one pass's gains). bench/selection.py:
peak ≈ 1.25× the sketch at 10⁶ for lazy, 1.12× for batched, the sketch included. Matvecs run on one BLAS thread (see
`single_threaded_blas`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import numpy as np

from .base import METHODS, Selection
from .batched import batched_greedy
from .constraints import Constraints
from .exact import exact_greedy
from .lazy import lazy_greedy, lazy_sizes
from .pools import MemoryPool, StreamPool
from .terms import row_terms


def run_greedy(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes, batch_width,
               max_rows=None) -> tuple[list, list, dict]:
    """Returns (rows, gains, stats) of `method` over `pool`; cons_args(pool) gives the constraints."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {METHODS}")
    v, d, budget = np.asarray(v, float), np.asarray(d, float), int(budget)
    with single_threaded_blas():
        terms = row_terms(pool, v, d, float(scale))  # the first pass: for a stream, also ids and metadata
        cons = Constraints(pool.n, **cons_args(pool))
        if pool.n == 0 or budget <= 0:
            rows, gains, stats = [], [], {}
        elif method == "exact":
            rows, gains, stats = exact_greedy(pool, terms, cons, budget)
        elif method == "lazy":
            sizes = shortlist_sizes or lazy_sizes(pool.n)
            if max_rows:
                sizes = [min(size, max_rows) for size in sizes]
            rows, gains, stats = lazy_greedy(pool, terms, cons, budget, sizes, max_rows=max_rows)
        else:
            rows, gains, stats = batched_greedy(pool, terms, cons, budget, batch_passes, batch_width, max_rows)
    return rows, gains, {"method": method, "passes_over_pool": pool.passes, **stats}


def single_threaded_blas():
    """Returns a context manager that limits BLAS to one thread (a no-op without threadpoolctl).

    Matvecs here are small and memory-bound: BLAS threads spinning on a loaded machine cost
    far more than they gain (10-100× on 2 busy cores), so the selection runs single-threaded.
    """
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
    """Greedy maximisation of scale⟨v, s⟩ − scale²‖s‖²_D over an in-memory pool (package doc).

    Optional constraints: at most `max_per_domain` per domain, one example per content hash,
    never the `excluded` rows. `method`: "lazy" (default; the exact greedy's selection),
    "exact", or "batched" (approximate; `batch_passes` passes, shortlists of `batch_width`×
    the picks a pass serves). Returns a Selection of pool rows in pick order with each step's marginal
    gain, and `stats`; fewer than `budget` rows only if the constraints run out.
    """
    pool = MemoryPool(pool_sketch)

    def cons_args(_):
        return dict(domains=domains, max_per_domain=max_per_domain, content=content, excluded=excluded)

    rows, gains, stats = run_greedy(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes,
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
    pool = StreamPool(chunks)

    def cons_args(p):
        excluded = None
        if excluded_ids is not None:
            excluded = np.flatnonzero(np.isin(p.example_ids, np.asarray(list(excluded_ids))))
        return dict(domains=p.domains, max_per_domain=max_per_domain,
                    content=p.content if dedup_content else None, excluded=excluded)

    rows, gains, stats = run_greedy(pool, v, d, scale, budget, cons_args, method, shortlist_sizes, batch_passes,
                                    batch_width, max_rows=max_rows_in_memory)
    rows = np.asarray(rows, np.int64)
    return Selection(rows, np.asarray(gains, float), example_ids=pool.example_ids[rows], stats=stats)

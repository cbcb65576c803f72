"""The lazy greedy: the exact greedy's picks over nested shortlists certified by Cauchy–Schwarz bounds."""

from __future__ import annotations

import numpy as np

from .pools import MemoryPool
from .shortlist import Shortlist, draw_shortlist, pool_gains, shortlist_gains


def lazy_sizes(n: int) -> list[int]:
    """Initial shortlist sizes, outermost first: min(65536, n/16), then /8 down to ≥ 512.

    A redraw costs O(parent·k) and a step O(innermost·k); sizes a factor 8 apart balance the
    two when windows last a fair fraction of a shortlist (bench/select.py tried /4 and /16).
    `lazy_greedy` then grows any level whose windows turn out too short.
    """
    sizes, size = [], min(65536, max(n // 16, 4096))
    while 512 <= size < n:
        sizes.append(size)
        size //= 8
    return sizes or [max(n, 1)]


def lazy_greedy(pool, terms, cons, budget, sizes, max_rows=None):
    """Returns (rows, gains, stats) of the exact greedy over nested shortlists (module doc).

    A pick is taken only when every level's left-out bound is below the best gain minus the
    tie band, so the selection is the exact greedy's whatever the sizes; sizes only move cost.
    """
    k = len(terms.nv)
    sizes = list(sizes)
    cap = min(max(pool.n // 8, sizes[0]), max_rows or pool.n)  # how far the outermost level may grow
    in_memory = isinstance(pool, MemoryPool)
    s = np.zeros(k)
    levels: list[Shortlist] = []
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
                parent, reach = pool_gains(pool, terms, cons, u), terms.reach_max
                work += pool.n
            else:
                p = levels[i - 1]
                parent, reach = [(p.idx, p.z, shortlist_gains(p, cons, u))], float(terms.reach[p.idx].max(initial=0))
                work += len(p.idx)
            levels.append(draw_shortlist(parent, sizes[i], 4 * tol, reach, terms, s, k, pool.dtype))
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
        levels[:] = [Shortlist(np.arange(pool.n), pool.z, terms.cost, terms.cost, s.copy(), -np.inf, 0.0)]
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

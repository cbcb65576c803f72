"""The lazy greedy: the exact greedy's picks over nested shortlists certified by Cauchy–Schwarz bounds.

method="lazy" makes the same selection as "exact", row for row, usually at a fraction of the
cost. f is NOT submodular: g_i(s) is linear in s and rises when z_i is anti-aligned with D·s,
so the classic lazy greedy (a stale gain is an upper bound) would be wrong. Instead,
Cauchy–Schwarz in the |D| geometry bounds how far a gain can move since it was computed at
sum s_ref:
    |g_i(s) − g_i(s_ref)| = 2N²|⟨z_i, D(s − s_ref)⟩| ≤ reach_i · ‖s − s_ref‖_|D|,
    reach_i = 2N²‖z_i‖_|D|.
A shortlist (`shortlist.Shortlist`) keeps the top-M candidates by gain at s_ref; everything
left out is summarised by its largest gain G and largest reach R then, so each of them has
gain ≤ G + R·‖s − s_ref‖_|D| now. While the shortlist's best gain beats that bound (minus the
tie band, `terms`), the exact greedy's pick provably lies in the shortlist and a step costs
O(M·k), not O(n·k); when the bound catches up, the shortlist is redrawn. Shortlists nest
(pool → n/16 capped at 65536 → /8 → /8, `lazy_sizes`), so most redraws read a small parent,
and a level whose windows last under two steps doubles. When the bounds cannot keep up at
all (strong penalties: one pick moves the others' gains by more than the gaps between them),
lazy notices from the rows it evaluates and takes exact steps for a while, so it is never
much slower than "exact" (nor faster, in that regime: bench/selection.py "strong").

`LazyGreedy` holds one run's state; `lazy_greedy` is its entry point.
"""

from __future__ import annotations

import numpy as np

from .pools import MemoryPool
from .shortlist import Shortlist, draw_shortlist, pool_gains, shortlist_gains

CHECK_EVERY = 32  # steps between two looks at whether lazy costs more than exact
EXACT_BACKOFF = 256  # exact steps taken on the first switch to exact mode (doubles on each switch)


def lazy_sizes(n: int) -> list[int]:
    """Initial shortlist sizes, outermost first: min(65536, n/16), then /8 down to ≥ 512.

    A redraw costs O(parent·k) and a step O(innermost·k); sizes a factor 8 apart balance the
    two when windows last a fair fraction of a shortlist (bench/selection.py tried /4 and /16).
    `LazyGreedy.grow` then grows any level whose windows turn out too short.
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
    return LazyGreedy(pool, terms, cons, budget, sizes, max_rows).run()


class LazyGreedy:
    """One run of the lazy greedy: nested shortlists (`levels`), their bounds and the selection.

    `run` returns (rows, gains, stats); stats counts each level's redraws, the steps that
    evaluated the whole pool (`exact_steps`) and the final `shortlist_sizes`.
    """

    def __init__(self, pool, terms, cons, budget: int, sizes, max_rows=None):
        self.pool, self.terms, self.cons, self.budget = pool, terms, cons, budget
        self.k = len(terms.nv)
        self.sizes = list(sizes)  # grown in place; the caller's list is left alone
        self.cap = min(max(pool.n // 8, self.sizes[0]), max_rows or pool.n)  # how far the outermost level may grow
        self.in_memory = isinstance(pool, MemoryPool)
        self.s = np.zeros(self.k)
        self.levels: list[Shortlist] = []
        # per level, kept as arrays so that a step checks every bound in a few vector ops
        self.refs, self.out_gain, self.out_reach = np.zeros((0, self.k)), np.zeros(0), np.zeros(0)
        self.drawn_at: list[int] = []  # the step at which each level was last drawn
        self.live = None  # the innermost level's −cost_i, or −inf where a row may no longer be taken
        self.rows, self.gains = [], []
        self.stats = {"redraws": [0] * len(self.sizes), "exact_steps": 0}
        self.work = 0  # rows evaluated since the last cost check
        self.exact_until, self.backoff, self.checked = 0, EXACT_BACKOFF, 0  # exact mode
        self.stuck = 0  # redraws since the last pick
        self.u = None  # the gain direction of the latest step

    def run(self) -> tuple[list, list, dict]:
        """Returns (rows, gains, stats): steps until the budget is met or nothing allowed is left."""
        self.u = self.terms.direction(self.s)
        self.redraw(0, self.u, self.terms.tol(self.u))
        while len(self.rows) < self.budget:
            if self.in_memory and len(self.rows) % CHECK_EVERY == 0 and len(self.rows) > self.checked:
                self.check_cost()
            if not self.step():
                break
        self.stats["shortlist_sizes"] = self.sizes
        return self.rows, self.gains, self.stats

    def step(self) -> bool:
        """One step: a certified pick, or the redraw or switch that prepares one.

        Returns False when no allowed row is left anywhere, True otherwise.
        """
        inner = self.levels[-1]
        u = self.u = self.terms.direction(self.s)
        g = self.live + inner.z @ u.astype(inner.z.dtype)
        best = g.max(initial=-np.inf)
        tol = self.terms.tol(u)
        self.work += len(g)
        if best == -np.inf:
            return self.refill(u, tol)
        # every left-out candidate of level j has gain ≤ out_gain + out_reach·‖s − s_ref‖_|D|
        moved = np.sqrt(np.square(self.refs - self.s) @ self.terms.dabs)
        stale = self.out_gain + self.out_reach * moved >= best - 3 * tol
        if stale.any():
            self.on_stale(stale, u, tol)
        else:
            self.take(inner, g, best, tol)
        return True

    def take(self, inner: Shortlist, g: np.ndarray, best: float, tol: float) -> None:
        """Adds the certified pick: the lowest innermost row within the tie band of `best`."""
        self.stuck = 0
        self.stats["exact_steps"] += int(len(g) == self.pool.n)
        pick = int(np.argmax(g >= best - tol))
        row = int(inner.idx[pick])
        self.rows.append(row)
        self.gains.append(float(g[pick]))
        self.s += inner.z[pick]
        self.live[pick] = -np.inf
        if self.cons.take(row):  # a quota filled or the row had duplicates: re-mask the innermost level
            self.live = self.cons.penalty[inner.idx] - inner.cost

    def on_stale(self, stale: np.ndarray, u: np.ndarray, tol: float) -> None:
        """Some level's bound reached the best gain: redraws from the outermost such level."""
        self.stuck += 1
        if self.stuck > 4 * len(self.sizes) + 4:  # only massive exact ties keep every redraw stale
            if not self.in_memory:
                raise RuntimeError("lazy selection cannot certify a pick among more than 4× the "
                                   "shortlist of tied candidates; use method='exact' or 'batched'")
            self.use_whole_pool()
            self.exact_until = (len(self.rows) // CHECK_EVERY + 2) * CHECK_EVERY  # back to lazy at a later check
            return
        j = int(np.argmax(stale))
        self.grow(j)
        self.redraw(j, u, tol)

    def refill(self, u: np.ndarray, tol: float) -> bool:
        """The innermost shortlist ran dry: redraws from the outermost level with leftovers.

        Returns False when no level has any (nothing allowed is left anywhere).
        """
        leftovers = np.flatnonzero(self.out_gain > -np.inf)
        if not len(leftovers):
            return False
        self.redraw(int(leftovers[0]), u, tol)
        return True

    def check_cost(self) -> None:
        """Switches to exact mode, or back, by the rows evaluated since the last check.

        Lazy costs more than exact when gains move faster than its bounds can follow (strong
        penalties); then it takes exact steps for a while (same picks), and retries.
        """
        self.checked = len(self.rows)
        if len(self.rows) == self.exact_until:
            # back to lazy: draw at the current sum. self.u predates the latest pick, and a draw
            # at it (labelled with the current s) would leave that pick's move out of the bounds
            self.u = self.terms.direction(self.s)
            self.redraw(0, self.u, self.terms.tol(self.u))
        elif len(self.rows) > self.exact_until and self.work > CHECK_EVERY * self.pool.n:  # more than exact's
            self.exact_until, self.backoff = len(self.rows) + self.backoff, self.backoff * 2
            self.use_whole_pool()
        self.work = 0

    def redraw(self, j: int, u: np.ndarray, tol: float) -> None:
        """Redraws level j and every level inside it, each from its parent, at direction u."""
        del self.levels[j:], self.drawn_at[j:]
        for i in range(j, len(self.sizes)):
            self.levels.append(self.draw_level(i, u, tol))
            self.drawn_at.append(len(self.rows))
            self.stats["redraws"][i] += 1
        self.refresh_levels()

    def draw_level(self, i: int, u: np.ndarray, tol: float) -> Shortlist:
        """Returns level i drawn from its parent: the pool for i = 0, else level i − 1."""
        if i == 0:
            parent, reach = pool_gains(self.pool, self.terms, self.cons, u), self.terms.reach_max
            self.work += self.pool.n
        else:
            p = self.levels[i - 1]
            parent = [(p.idx, p.z, shortlist_gains(p, self.cons, u))]
            reach = float(self.terms.reach[p.idx].max(initial=0))
            self.work += len(p.idx)
        return draw_shortlist(parent, self.sizes[i], 4 * tol, reach, self.terms, self.s, self.k, self.pool.dtype)

    def refresh_levels(self) -> None:
        """Rebuilds the per-level bound arrays and the innermost level's live gains offset."""
        self.refs = np.array([lv.s_ref for lv in self.levels])
        self.out_gain = np.array([lv.out_gain for lv in self.levels])
        self.out_reach = np.array([lv.out_reach for lv in self.levels])
        self.live = self.cons.penalty[self.levels[-1].idx] - self.levels[-1].cost

    def grow(self, j: int) -> None:
        """Doubles level j's size if its last window lasted under two steps (up to a limit)."""
        # a level whose own bound went stale within a step is too small for how fast gains move
        # here (strong penalties): double it, up to half its parent
        limit = self.cap if j == 0 else self.sizes[j - 1] // 2
        if len(self.rows) - self.drawn_at[j] < 2 and self.sizes[j] * 2 <= limit:
            self.sizes[j] *= 2

    def use_whole_pool(self) -> None:
        """Exact mode: one level that is the in-memory pool itself (a view, no copy).

        It leaves nothing out, so every step evaluates every row, like method="exact".
        """
        pool, terms = self.pool, self.terms
        self.levels[:] = [Shortlist(np.arange(pool.n), pool.z, terms.cost, terms.cost, self.s.copy(), -np.inf, 0.0)]
        self.drawn_at[:] = [len(self.rows)]
        self.refresh_levels()

"""The exact greedy: every step recomputes every gain (the reference the other methods match).

method="exact" recomputes all n gains every step, O(B·n·k), and takes the best one (the
lowest row among near-ties, `terms`). Streamed, that is one pass over the pool per step.
"""

from __future__ import annotations

import numpy as np

from .pools import MemoryPool
from .shortlist import pool_gains


def exact_greedy(pool, terms, cons, budget):
    """Returns (rows, gains, stats): every step recomputes every gain in one pass."""
    s = np.zeros(len(terms.nv))
    rows, gains = [], []
    while len(rows) < budget:
        u = terms.direction(s)
        g = np.concatenate([g for _, _, g in pool_gains(pool, terms, cons, u)])
        best = g.max(initial=-np.inf)
        if best == -np.inf:
            break  # nothing allowed is left
        row = int(np.argmax(g >= best - terms.tol(u)))  # lowest row within the tie band
        rows.append(row)
        gains.append(float(g[row]))
        s += pool_row(pool, row)
        cons.take(row)
    return rows, gains, {}


def pool_row(pool, row: int) -> np.ndarray:
    """Returns sketch row `row` of the pool as float64."""
    if isinstance(pool, MemoryPool):
        return pool.z[row].astype(np.float64)
    for start, zb in pool.blocks():  # the exact method streamed: a pass per step, as it says
        if start <= row < start + len(zb):
            return zb[row - start].astype(np.float64)
    raise IndexError(row)

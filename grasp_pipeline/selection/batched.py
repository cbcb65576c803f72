"""The batched greedy: windows of m exact steps on a shortlist drawn per pass (approximate).

method="batched" takes windows of m = ⌈B/passes⌉ steps (64 passes by default, m ≤ 2048).
Each window reads the pool once, keeps the top 2m candidates by current gain, and takes m
exact greedy steps among them using their Gram matrix (O(m) per step). Approximate, because
a candidate left out cannot overtake until the next window. Measured: ≥ 99.85% of the exact
objective on small anti-aligned problems (tests), ≈ 99.95% at n = 10⁴–10⁵ under a strong
penalty (bench/select.py); with B ≤ passes it is the exact greedy. Its cost does not depend
on the penalty: ~passes full passes plus O(B·m).
"""

from __future__ import annotations

import math

import numpy as np

from .shortlist import draw_shortlist, pool_gains


GRAM_ROWS = 4096  # batched: at most this many shortlisted rows per window, so G ≤ 64 MB in float32


def batched_greedy(pool, terms, cons, budget, passes, width, max_rows=None):
    """Returns (rows, gains, stats): windows of m greedy steps on a shortlist drawn per pass.

    Each window reads the pool once, keeps the top width·m candidates by current gain, and
    takes m exact greedy steps among them using their Gram matrix G = 2N²·Z D Zᵀ, so a step
    costs O(width·m) rather than O(width·m·k). Candidates left out are not looked at until
    the next window: that is what makes it approximate. `certified_steps` counts the picks
    the Cauchy–Schwarz bound (`lazy` module doc) proves to be the exact greedy's, given the history.
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
        short = draw_shortlist(pool_gains(pool, terms, cons, u), max(m, int(width * m)), 0.0, terms.reach_max, terms,
                               s, k, pool.dtype)
        if not len(short.idx):
            break  # nothing allowed is left
        z = short.z
        gram = window_gram(z, terms.wscale, incremental)
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
            close_taken(g, pick, cons, domain, content)
        for pick in picked:  # the same summation order as the other methods
            s += z[pick]
    return rows, gains, stats


def window_gram(z: np.ndarray, wscale: np.ndarray, incremental: bool) -> np.ndarray:
    """Returns the window's Gram matrix G = Z·diag(2N²d)·Zᵀ, in the sketch dtype."""
    if incremental:  # z·√(2N²D) times its transpose: a symmetric product (syrk, half the flops)
        y = z * np.sqrt(wscale).astype(z.dtype)
        return y @ y.T
    return (z * wscale.astype(z.dtype)) @ z.T


def close_taken(g: np.ndarray, pick: int, cons, domain, content) -> None:
    """Sets to −inf the window gains of `pick` and of the rows its taking closed (quota, duplicates).

    `domain` and `content` are the window rows' codes (None without that constraint);
    `cons.take(row)` must already have counted the pick.
    """
    g[pick] = -np.inf
    if domain is not None and not cons.domain_open[domain[pick]]:
        g[domain == domain[pick]] = -np.inf
    if content is not None:
        g[content == content[pick]] = -np.inf

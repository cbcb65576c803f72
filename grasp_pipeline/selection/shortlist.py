"""Shortlists: the top candidates by gain at a reference sum, with a bound on every row left out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constraints import Constraints
from .terms import RowTerms


@dataclass
class Shortlist:
    """Top candidates by gain at s_ref, with a bound on every allowed candidate left out."""

    idx: np.ndarray  # pool rows, ascending
    z: np.ndarray  # their sketch rows (a copy, in the pool's dtype)
    cost: np.ndarray  # their cost_i
    gain: np.ndarray  # their gains at s_ref
    s_ref: np.ndarray  # the selection sum when drawn
    out_gain: float  # largest gain at s_ref among allowed candidates left out (−inf: none)
    out_reach: float  # largest reach among them (an upper bound)


def draw_shortlist(blocks, size: int, gap: float, reach: float, terms: RowTerms, s: np.ndarray, k: int,
          dtype) -> Shortlist:
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
        return Shortlist(np.zeros(0, np.int64), np.zeros((0, k), dtype), empty, empty, s.copy(), out_gain,
                          reach)
    prune()
    rows, zs, costs, gains = kept[0]
    return Shortlist(rows, zs, costs, gains, s.copy(), out_gain, reach if out_gain > -np.inf else 0.0)


def pool_gains(pool, terms: RowTerms, cons: Constraints, u: np.ndarray):
    """Yields (rows as a slice, sketch block, gains; −inf where not allowed) over one pass."""
    for start, zb in pool.blocks():
        rows = slice(start, start + len(zb))
        yield rows, zb, (cons.penalty[rows] - terms.cost[rows]) + zb @ u.astype(zb.dtype)


def shortlist_gains(short: Shortlist, cons: Constraints, u: np.ndarray) -> np.ndarray:
    """Returns the shortlist's current gains, −inf where a row may not be taken."""
    return (cons.penalty[short.idx] - short.cost) + short.z @ u.astype(short.z.dtype)

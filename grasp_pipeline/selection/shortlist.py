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
    """Returns the Shortlist of allowed candidates with gain ≥ min(size-th largest, best − gap).

    `blocks` yields (rows, sketch rows, gains) in ascending row order, rows being a slice of
    the pool or an index array, and gains −inf where a row may not be taken. The `gap` keeps
    every near-tie of the best inside, so the left-out bound starts strictly below the tie
    band. `reach` bounds the reach of every row of the parent. At most 4·size rows are kept
    (massive exact ties beyond that are left out, lowest rows kept); memory ~6·size rows.
    """
    draw = ShortlistDraw(size, gap)
    for rows, zb, gains in blocks:
        draw.add(rows, zb, gains, terms.cost)
    if not draw.kept:
        empty = np.zeros(0)
        return Shortlist(np.zeros(0, np.int64), np.zeros((0, k), dtype), empty, empty, s.copy(), draw.out_gain,
                         reach)
    draw.prune()
    rows, zs, costs, gains = draw.kept[0]
    return Shortlist(rows, zs, costs, gains, s.copy(), draw.out_gain, reach if draw.out_gain > -np.inf else 0.0)


class ShortlistDraw:
    """A shortlist being drawn block by block: the parts kept, the threshold, the left-out bound.

    `kept` holds (rows, sketch rows, costs, gains) parts; after `prune` it is one part. The
    threshold only ever rises towards its final value, so a row dropped stays dropped, and
    `out_gain` is the largest gain dropped so far.
    """

    def __init__(self, size: int, gap: float):
        self.size, self.gap = size, gap
        self.kept: list[tuple] = []
        self.held = 0  # rows in `kept`
        self.threshold = -np.inf
        self.out_gain = -np.inf

    def add(self, rows, zb: np.ndarray, gains: np.ndarray, cost: np.ndarray) -> None:
        """Keeps the block's rows above the threshold (raised first if they alone fill the size).

        `rows` index the pool (a slice or an array), `cost` is the pool's cost_i (length n).
        """
        above = gains >= self.threshold if self.threshold > -np.inf else gains > -np.inf
        if np.count_nonzero(above) > self.size:
            self.tighten(gains[above])
        keep = self.keep_mask(gains)
        if keep.any():
            kept_rows = np.flatnonzero(keep) + rows.start if isinstance(rows, slice) else rows[keep]
            self.kept.append((kept_rows, zb[keep], cost[rows][keep], gains[keep]))
            self.held += len(kept_rows)
        if self.held > 2 * self.size:
            self.prune()

    def tighten(self, gains: np.ndarray) -> None:
        """Raises the threshold to min(size-th largest of `gains`, their best − gap) if higher."""
        if len(gains) > self.size:
            kth = np.partition(gains, len(gains) - self.size)[len(gains) - self.size]
            self.threshold = max(self.threshold, min(float(kth), float(gains.max()) - self.gap))

    def keep_mask(self, gains: np.ndarray) -> np.ndarray:
        """Returns which gains to keep; folds the largest one left out into the bound."""
        keep = gains >= self.threshold if self.threshold > -np.inf else gains > -np.inf
        self.out_gain = max(self.out_gain, float(np.max(gains, where=~keep, initial=-np.inf)))  # no copy
        return keep

    def prune(self) -> None:
        """Tightens the threshold over every kept row and joins what stays into one part."""
        self.tighten(np.concatenate([part[3] for part in self.kept]))
        parts, self.kept = self.kept, []
        while parts:  # filter each part before joining them: the peak stays near the kept rows
            rows, zs, costs, gains = parts.pop(0)
            keep = self.keep_mask(gains)
            self.kept.append((rows, zs, costs, gains) if keep.all() else
                             (rows[keep], zs[keep], costs[keep], gains[keep]))
        if len(self.kept) > 1:
            self.kept = [tuple(np.concatenate(columns) for columns in zip(*self.kept))]
        self.cap_ties()
        self.held = len(self.kept[0][0])

    def cap_ties(self) -> None:
        """Keeps at most 4·size rows; only exact ties get past the threshold: the lowest rows stay."""
        rows, zs, costs, gains = self.kept[0]
        if len(rows) > 4 * self.size:
            keep = np.zeros(len(rows), bool)
            keep[np.lexsort((rows, -gains))[:4 * self.size]] = True
            self.out_gain = max(self.out_gain, float(np.max(gains, where=~keep, initial=-np.inf)))
            self.kept = [(rows[keep], zs[keep], costs[keep], gains[keep])]


def pool_gains(pool, terms: RowTerms, cons: Constraints, u: np.ndarray):
    """Yields (rows as a slice, sketch block, gains; −inf where not allowed) over one pass."""
    for start, zb in pool.blocks():
        rows = slice(start, start + len(zb))
        yield rows, zb, (cons.penalty[rows] - terms.cost[rows]) + zb @ u.astype(zb.dtype)


def shortlist_gains(short: Shortlist, cons: Constraints, u: np.ndarray) -> np.ndarray:
    """Returns the shortlist's current gains, −inf where a row may not be taken."""
    return (cons.penalty[short.idx] - short.cost) + short.z @ u.astype(short.z.dtype)

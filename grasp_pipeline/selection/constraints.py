"""Constraints: exclusions, per-domain (or per-label) quotas, one example per content hash."""

from __future__ import annotations

import numpy as np


def allowed_mask(n: int, excluded: np.ndarray | None) -> np.ndarray:
    """Returns a length-n boolean mask, False at the `excluded` rows."""
    allowed = np.ones(n, bool)
    if excluded is not None:
        allowed[excluded] = False
    return allowed


def codes(values: np.ndarray) -> np.ndarray:
    """Returns integer codes 0..m−1 for any array of hashable values (None included)."""
    try:
        return np.unique(values, return_inverse=True)[1].reshape(-1)
    except TypeError:  # unorderable mixes such as str and None
        table: dict = {}
        return np.fromiter((table.setdefault(x, len(table)) for x in values.tolist()), np.int64, len(values))


class Constraints:
    """Which rows may still be taken: not taken or excluded, domain under quota, content unseen.

    The state is `penalty`, 0 for a row that may be taken and −inf for one that may not, so
    masking gains is one add. Taking a row touches only that row and its content duplicates;
    a domain filling up touches its rows once. No O(n) work per step.
    """

    def __init__(self, n: int, domains=None, max_per_domain: int | dict = 0, content=None, excluded=None):
        """`max_per_domain`: one cap for every domain (0 = none), or {domain: cap} (a quota vector:
        a domain it does not name gets 0), as composition-first selection takes its counts."""
        self.penalty = np.zeros(n)
        if excluded is not None:
            self.penalty[excluded] = -np.inf
        self.domain = self.content = None
        if domains is not None and (isinstance(max_per_domain, dict) or max_per_domain):
            values = np.asarray(domains)
            self.domain = codes(values)
            self.domain_count = np.zeros(self.domain.max(initial=-1) + 1, np.int64)
            self.quota = np.full(len(self.domain_count), int(max_per_domain) if not isinstance(max_per_domain, dict)
                                 else 0, np.int64)
            if isinstance(max_per_domain, dict):
                for code in range(len(self.quota)):
                    value = values[int(np.argmax(self.domain == code))]
                    self.quota[code] = int(max_per_domain.get(value.item() if hasattr(value, "item") else value, 0))
            self.domain_open = self.quota > 0
            for code in np.flatnonzero(~self.domain_open):
                self.penalty[self.domain == code] = -np.inf
        if content is not None:
            self.content = codes(np.asarray(content))
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
            if self.domain_count[code] >= self.quota[code] and self.domain_open[code]:
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


def rank_within_group(codes: np.ndarray) -> np.ndarray:
    """Returns, for each position, how many earlier positions hold the same code."""
    by_code = np.argsort(codes, kind="stable")
    sorted_codes = codes[by_code]
    rank = np.empty(len(codes), np.int64)
    rank[by_code] = np.arange(len(codes)) - np.searchsorted(sorted_codes, sorted_codes, side="left")
    return rank


def label_quota(labels: np.ndarray, budget: int) -> int:
    """Returns the per-label cap that balances a budget over the labels present: ceil(budget / labels)."""
    return -(-budget // max(1, len(np.unique(labels))))

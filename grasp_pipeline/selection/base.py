"""What a selection is, and the greedy methods that can produce one."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("exact", "lazy", "batched")


@dataclass
class Selection:
    """A selection: pool rows in pick order, each step's gain, and how it was made."""

    rows: np.ndarray  # pool row indices in selection order
    gains: np.ndarray  # objective gain of each step (score for top-k methods)
    example_ids: np.ndarray | None = None  # streaming selections: the example ids of `rows`
    stats: dict = field(default_factory=dict)  # passes over the pool, shortlist redraws, ...

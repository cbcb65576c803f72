"""What a surrogate may see about the retrained subsets, and the size terms it is built from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

NORMALISATIONS = {"none": lambda s: np.ones_like(s, float), "sqrt": lambda s: 1 / np.sqrt(s),
                  "mean": lambda s: 1 / s}


SIZE_TERMS = {"none": None, "linear": lambda s: s.astype(float), "log": lambda s: np.log(s)}


@dataclass
class SubsetData:
    """Everything a surrogate may see about the retrained subsets (all roles)."""

    subset_ids: np.ndarray  # (m,)
    roles: np.ndarray  # (m,) "fit" / "holdout"
    samplers: np.ndarray  # (m,)
    sizes: np.ndarray  # (m,)
    membership: sp.csr_matrix  # (m, n) 0/1 over pool rows
    utility: np.ndarray  # (m, T), mean over repeats
    pool_sketch: np.ndarray  # (n, k)
    task_sketch: np.ndarray  # (T, k)
    tasks: list[str]
    sketch_blocks: int = 1  # equal blocks the sketch columns form: one per reference checkpoint

    def __post_init__(self):
        if self.sketch_blocks < 1 or self.pool_sketch.shape[1] % self.sketch_blocks:
            raise ValueError(f"{self.pool_sketch.shape[1]} sketch columns do not split into {self.sketch_blocks} "
                             "equal checkpoint blocks")
        self.sum_z = np.asarray(self.membership @ self.pool_sketch.astype(np.float64))  # (m, k)
        self.cache: dict = {}  # derived matrices shared by folds and tasks (never holdout utilities)

    @property
    def fit_rows(self) -> np.ndarray:
        return np.flatnonzero(self.roles == "fit")

    @property
    def holdout_rows(self) -> np.ndarray:
        return np.flatnonzero(self.roles == "holdout")


def sketch_range(data: SubsetData, block: int, dim: int = 0) -> tuple[int, int]:
    """The [start, stop) sketch columns of checkpoint block `block` (-1 = every block), cut to
    their first `dim` columns when dim > 0."""
    width = data.pool_sketch.shape[1]
    if block == -1:
        start, stop = 0, width
    elif 0 <= block < data.sketch_blocks:
        size = width // data.sketch_blocks
        start, stop = block * size, (block + 1) * size
    else:
        raise ValueError(f"sketch_block {block} does not exist: the sketches have {data.sketch_blocks} "
                         "checkpoint block(s) (-1 = all)")
    return start, (min(stop, start + dim) if dim else stop)

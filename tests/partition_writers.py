"""Light helpers for writer subprocesses (no torch import: 8 of them start at once on 2 cores)."""

from __future__ import annotations

import numpy as np
import polars as pl

from grasp_pipeline.infra.storage import DeltaStore


def outcome_rows(batch: str, n: int, offset: int = 0) -> pl.DataFrame:
    """`n` subset_outcomes rows of one retraining batch (subset ids offset.., one task)."""
    ids = np.arange(offset, offset + n, dtype=np.int64)
    return pl.DataFrame({"subset_id": ids, "task": ["t"] * n, "loss": ids * 0.5 + 1.0, "utility": -(ids * 0.5 + 1.0),
                         "repeat": np.zeros(n, dtype=np.int64), "steps": np.full(n, 4, dtype=np.int64),
                         "seconds": np.full(n, 0.1), "batch": [batch] * n})


def write_one_batch(root: str, batch: int, current: list[str] | None = None) -> int:
    """Writes batch `b{batch}` (50 rows) as a partition (removing those outside `current`, when given);
    returns the version it committed."""
    return DeltaStore(root).write_partitions("subset_outcomes", outcome_rows(f"b{batch}", 50, offset=50 * batch),
                                             current=current)

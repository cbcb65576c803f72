"""Task-sketches stage: the sketch of each task's mean-loss gradient (`task_sketches`), in the
projection recorded by `gradient_sketches`."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import torch

from ..infra import progress
from ..infra.storage import DeltaStore
from ..sketching import CheckpointSketcher
from ..workloads.base import Workload
from .base import StageResult, refuse_non_finite, stage
from .gradient_sketches import stored_sketcher
from .tables import check_one_build, read_pool, read_tasks


@stage
def run_task_sketches(store: DeltaStore, workload: Workload, chunk_size: int = 64) -> StageResult:
    """Sketches ∇θ of each task's mean loss at the reference checkpoints; writes `task_sketches`.

    The projection (kind, k, seed) is read from `gradient_sketches`' sketch_config, so task
    and pool sketches always live in the same space.
    """
    version, sketcher = stored_sketcher(store, workload, chunk_size)
    frame, names, index = read_tasks(store, "dev")
    check_one_build(read_pool(store), frame)
    rows = task_sketch_rows(sketcher, workload, frame, names, index)
    out = pl.DataFrame(rows, schema={"task": pl.Utf8, "sketch": pl.List(pl.Float32), "loss": pl.Float64,
                                     "seconds": pl.Float64})
    out = out.with_columns(sketch_config=pl.lit(sketcher.config(version)), model_version=pl.lit(version))
    refuse_non_finite("task_sketches", out, ["sketch", "loss"], ["task"],
                      f"the task gradients at reference model {version} overflow: check its warm-up loss in "
                      "reference_models (lower reference.lr) and rerun reference_model")
    result = StageResult()
    result.write(store, "task_sketches", out)
    result.metrics = {"tasks": len(names), **{f"loss.{r['task']}": r["loss"] for r in rows}}
    return result


def task_sketch_rows(sketcher: CheckpointSketcher, workload: Workload, frame: pl.DataFrame, names: list[str],
                     index: np.ndarray) -> list[dict]:
    """[{task, sketch (list of float32), loss, seconds}] of the mean-loss gradient of each task in
    `names`, from its rows of `frame` (`index`: the task of each row)."""
    inputs = workload.encode(frame["text"].to_list())
    rows = []
    with progress.task("sketching tasks", total=len(names), unit="task") as tasks_done:
        for t, task in enumerate(names):
            began = time.perf_counter()
            q, loss = sketcher.sketch_mean_gradient(inputs[torch.as_tensor(index == t)])
            rows.append({"task": task, "sketch": q.astype(np.float32).tolist(), "loss": loss,
                         "seconds": time.perf_counter() - began})
            tasks_done.advance()
    return rows

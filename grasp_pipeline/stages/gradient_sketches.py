"""Gradient-sketches stage: per-example gradient sketches of the pool (`gradient_sketches`), and the
sketcher that later sketches (tasks, new domains) reuse to stay in their space."""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl

from ..config.params import SketchParams
from ..infra import progress
from ..infra.storage import DeltaStore
from ..sketching import CheckpointSketcher
from ..workloads.base import Workload
from .base import StageResult, refuse_non_finite, stage
from .tables import load_reference_checkpoints, pool_sketches, read_pool, sketch_matrix


def make_sketcher(workload: Workload, checkpoints: list[tuple[int, dict]], params: SketchParams) -> CheckpointSketcher:
    return CheckpointSketcher.build(workload, checkpoints, params.projection, params.k, params.seed,
                                    params.chunk_size, storage_dtype=params.storage_dtype,
                                    nonzeros=params.nonzeros, factor_dim=params.factor_dim)


@stage
def run_gradient_sketches(store: DeltaStore, workload: Workload, params: SketchParams,
                          shards: list[str] | None = None) -> StageResult:
    """Sketches every pool example's gradient at the reference checkpoints, shard by shard;
    writes `gradient_sketches`.

    With `shards` (shard keys of corpus_shards) only those shards are sketched and exactly
    their partitions replaced, so shards can run on separate workers and a crashed shard
    reruns alone; otherwise every shard, replacing the table (dropping vanished shards).
    """
    version, checkpoints = load_reference_checkpoints(store, workload)
    sketcher = make_sketcher(workload, checkpoints, params)
    pool = read_pool(store, shards)
    parts = []
    with progress.task("sketching", total=pool["shard"].n_unique(), unit="shard") as shards_done:
        for (shard,), shard_rows in pool.group_by("shard", maintain_order=True):
            shards_done.at(shard)
            parts.append(shard_sketches(sketcher, workload, shard_rows))
            shards_done.advance()
    frame = pl.concat(parts).sort("example_id").with_columns(
        sketch_config=pl.lit(sketcher.config(version)), model_version=pl.lit(version))
    # refused before the commit: everything downstream would fit and select on them
    refuse_non_finite("gradient_sketches", frame, ["sketch", "grad_norm", "loss"], ["example_id", "shard"],
                      f"at reference model {version}: check its warm-up loss in reference_models (lower "
                      "reference.lr) and rerun reference_model")
    sketches = sketch_matrix(frame["sketch"], np.float32)
    result = StageResult()
    if shards is None:
        result.write(store, "gradient_sketches", frame)
    else:
        # shards of a corpus the root held before go in the same commit (a root follows its corpus)
        result.write_partitions(store, "gradient_sketches", frame,
                                current=store.partition_values("corpus_shards", "shard"))
    result.metrics = {"examples": frame.height, "shards": frame["shard"].n_unique(), "k": params.k, "dim": sketcher.dim,
                      "projection": params.projection, "finite": bool(np.isfinite(sketches).all()),
                      "mean_grad_norm": float(frame["grad_norm"].mean()), "mean_loss": float(frame["loss"].mean()),
                      "examples_per_second": frame.height / max(float(frame["seconds"].sum()), 1e-9),
                      "model_version": version}
    return result


def shard_sketches(sketcher: CheckpointSketcher, workload: Workload, shard_rows: pl.DataFrame) -> pl.DataFrame:
    """The gradient_sketches rows of one shard (without the sketch_config and model_version columns)."""
    began = time.perf_counter()
    out = sketcher.sketch_examples(workload.encode(shard_rows["text"].to_list()))
    per_example = (time.perf_counter() - began) / shard_rows.height
    return pl.DataFrame({
        "example_id": shard_rows["example_id"], "shard": shard_rows["shard"],
        "domain": shard_rows["domain"],
        **({"build_id": shard_rows["build_id"]} if "build_id" in shard_rows.columns else {}),
        "sketch": pl.Series(out.sketch.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
        "grad_norm": out.grad_norm.astype(np.float64), "loss": out.loss.astype(np.float64),
        "seconds": per_example,
    })


def stored_sketcher(store: DeltaStore, workload: Workload, chunk_size: int = 64) -> tuple[str, CheckpointSketcher]:
    """Returns (model_version, the sketcher gradient_sketches recorded: its projection kind, k, seed
    and checkpoints), so new sketches live in the stored ones' space; ValueError when the sketches
    were taken at another reference model than the stored one."""
    version, checkpoints = load_reference_checkpoints(store, workload)
    pool_config = json.loads(pool_sketches(store)["sketch_config"][0])
    if pool_config["model_version"] != version:
        raise ValueError(f"gradient_sketches were computed at model {pool_config['model_version']}, the "
                         f"reference model is now {version}; rematerialise gradient_sketches first")
    return version, CheckpointSketcher.from_config(workload, checkpoints, pool_config, chunk_size)

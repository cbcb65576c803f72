"""Reference-model stage: the warm-up run whose checkpoints every gradient is sketched at."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import polars as pl
import torch

from ..config.params import ReferenceParams
from ..infra import progress
from ..infra.checkpoint_files import FOLDER, checkpoint_location, write_state
from ..infra.storage import FILE_ENTRY, DeltaStore
from ..training.retrain import Recipe, StackedTrainer, unstack
from ..workloads.base import Workload
from .base import StageResult, stage
from .tables import checkpoint_fingerprint, read_pool


@stage
def run_reference_model(store: DeltaStore, workload: Workload, params: ReferenceParams) -> StageResult:
    """Warms the proxy up on a seeded pool sample, keeping the parameters at `sketch_steps`;
    writes θ and the checkpoints as files beside the tables (grasp_pipeline/infra/checkpoint_files.py),
    then `reference_models` (one row: their files, sha256 and sizes, and the model's facts)."""
    steps = sorted(set(params.sketch_steps))
    if not steps or steps[0] < 0 or steps[-1] > params.steps or len(steps) != len(params.sketch_steps):
        raise ValueError(f"reference.sketch_steps {list(params.sketch_steps)} must be distinct steps in "
                         f"0..{params.steps} (reference.steps), at least one")
    pool = read_pool(store)
    rng = np.random.default_rng(params.seed)
    rows = np.sort(rng.choice(pool.height, size=min(params.warmup_examples, pool.height), replace=False))
    inputs = workload.encode(pool["text"].to_list())
    recipe = Recipe.from_params(params, init_seed=params.seed, data_order_seed=params.seed)
    began = time.perf_counter()
    trainer = StackedTrainer(workload, recipe)
    snapshots: dict = dict.fromkeys(steps)
    with progress.task("warm-up", total=params.steps, unit="step") as warmup:
        # the loss of each step's batch, as train_loss per step (an MLflow curve in the Dagster layer)
        report = (lambda step, losses: warmup.advance(train_loss=float(losses[0]))) if progress.active() else None
        theta = unstack(trainer.train(inputs, [rows], [(params.seed, 0)], snapshots=snapshots, on_step=report), 0)
    checkpoints = {step: unstack(snapshots[step], 0) for step in steps}
    seconds = time.perf_counter() - began
    warmup_loss = float(trainer.example_losses({n: p[None] for n, p in theta.items()}, inputs[rows]).mean())
    _check_finite(warmup_loss, theta, params)
    version = checkpoint_fingerprint(checkpoints)
    state_files, checkpoint_files = write_files(checkpoint_location(store), version, theta, checkpoints, params)
    frame = pl.DataFrame({
        "model_version": [version], "workload": [json.dumps(workload.config(), sort_keys=True)],
        "parameters": [sum(p.numel() for p in theta.values())], "warmup_loss": [warmup_loss],
        "recipe": [json.dumps(recipe.to_dict())], "state": [state_files],
        "sketch_steps": [steps], "checkpoints": [checkpoint_files], "seconds": [seconds],
    }, schema_overrides={"parameters": pl.Int64, "state": pl.List(FILE_ENTRY), "checkpoints": pl.List(FILE_ENTRY),
                         "sketch_steps": pl.List(pl.Int64)})
    result = StageResult()
    result.write(store, "reference_models", frame.with_columns(path=pl.lit(store.uri("reference_models"))))
    result.metrics = {"warmup_loss": warmup_loss, "parameters": int(frame["parameters"][0]),
                      "model_version": version, "sketch_steps": steps}
    return result


def write_files(location, version: str, theta: dict, checkpoints: dict[int, dict],
                params: ReferenceParams) -> tuple[list[dict], list[dict]]:
    """Writes θ and every checkpoint as files under checkpoints/<version>/ (`final`, `step-<n>`);
    returns (θ's file entries, every checkpoint's file entries in step order)."""
    shard_bytes = params.checkpoint_shard_mb << 20
    folder = f"{FOLDER}/{version}"
    # the checkpoints' hash is the version; θ's files carry their own hash in their names (two runs
    # can share the checkpoints and still end at different θ, e.g. sketch_steps (0,) and other steps)
    state_files = write_state(location, f"{folder}/final", theta, params.steps, shard_bytes)
    checkpoint_files = [entry for step, state in sorted(checkpoints.items())
                        for entry in write_state(location, f"{folder}/step-{step:06d}", state, step, shard_bytes)]
    return state_files, checkpoint_files


def _check_finite(warmup_loss: float, theta: dict, params: ReferenceParams) -> None:
    """Refuses a diverged warm-up before anything is written: non-finite parameters make every
    sketch non-finite, and the stages after it would fit and select on them."""
    bad = sorted(name for name, tensor in theta.items() if not bool(torch.isfinite(tensor).all()))
    if bad or not math.isfinite(warmup_loss):
        raise FloatingPointError(
            f"reference model diverged: warm-up loss {warmup_loss}, non-finite parameters {bad[:5]}; lower "
            f"reference.lr (now {params.lr!r}) or reference.steps (now {params.steps}); nothing was written")

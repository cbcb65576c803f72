"""Reference-model stage: the warm-up run whose checkpoints every gradient is sketched at."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import polars as pl
import torch

from .. import progress
from ..config.params import ReferenceParams
from ..retrain import Recipe, StackedTrainer, unstack
from ..storage import DeltaStore
from ..workloads.base import Workload
from .base import StageResult, stage
from .tables import checkpoint_fingerprint, read_pool


@stage
def train_reference_model(store: DeltaStore, workload: Workload, params: ReferenceParams) -> StageResult:
    """Warms the proxy up on a seeded pool sample, keeping the parameters at `sketch_steps`;
    writes `reference_models` (one row: the checkpoints and the final θ)."""
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
    version = checkpoint_fingerprint(checkpoints)
    frame = pl.DataFrame({
        "model_version": [version], "workload": [json.dumps(workload.config(), sort_keys=True)],
        "parameters": [sum(p.numel() for p in theta.values())], "warmup_loss": [warmup_loss],
        "recipe": [json.dumps(recipe.to_dict())], "state": [state_bytes(theta)],
        "sketch_steps": [steps], "checkpoints": [state_bytes(checkpoints)], "seconds": [seconds],
    }, schema_overrides={"parameters": pl.Int64, "state": pl.Binary, "checkpoints": pl.Binary,
                         "sketch_steps": pl.List(pl.Int64)})
    result = StageResult()
    result.write(store, "reference_models", frame.with_columns(path=pl.lit(store.uri("reference_models"))))
    result.metrics = {"warmup_loss": warmup_loss, "parameters": int(frame["parameters"][0]),
                      "model_version": version, "sketch_steps": steps}
    return result


def state_bytes(state: dict) -> bytes:
    """`torch.save` bytes of a parameter dict, or of nested dicts of them ({step: parameters}),
    every tensor detached and on the CPU (so the bytes load on any device)."""
    def on_cpu(value):
        return {k: on_cpu(v) for k, v in value.items()} if isinstance(value, dict) else value.detach().cpu()

    buffer = io.BytesIO()
    torch.save(on_cpu(state), buffer)
    return buffer.getvalue()

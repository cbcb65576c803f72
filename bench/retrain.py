"""Batched vs sequential subset retraining: subsets per second, peak memory, loss agreement.

    python bench/retrain.py [--quick] [--device cpu]

Prints one JSON object. Every (workload, mode, M) cell runs in its own subprocess so that
its peak resident memory is its own. Two sequential baselines train 8 subsets one after
another (their rate does not depend on M):

- `sequential`: the conventional loop, as peers train one model per worker: an `nn.Module`,
  `torch.optim.Adam` (its default foreach implementation) and `loss.backward()`, with the
  same initialisation and data order as the batched path;
- `functional_m1`: our own functional, vmapped trainer with a stack of one model.

Batched trains all M subsets in one vmapped loop. `ratios` compares batched with the
conventional loop (`batched_over_sequential_*`) and with our own one-model path
(`batched_over_functional_m1_*`), side by side in the same run; `max_abs_final_loss_diff`
is over both baselines at M = 8 (the same subsets and seeds).

The demo recipe (`grasp_pipeline.config.load_params("demo")`: its workload, steps, batch
size, optimiser, schedule, and the retraining stage's `workers`, `models_per_batch` and
`compile`) is measured the same way, on subsets of the size its plan draws:
`demo_pipeline` is `retrain_subsets` as the stage calls it (worker start-up and any compile
included), `demo_conventional` the conventional loop with torch's default threads and
`demo_conventional_one_thread` the same with one. Pairs run interleaved (the machine may be
shared); `ratios.demo_recipe_over_conventional` is the median over pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

WORKLOADS = {"default": ("byte_mlp", {}), "transformer": ("byte_transformer", {})}


def _pool_inputs(workload, n: int):
    from grasp_pipeline.corpus import cut_examples, load_documents

    documents, _ = load_documents(None)
    examples = cut_examples(documents, 128).sample(n=n, seed=0)
    return workload.encode(examples["text"].to_list())


def cell(workload_key: str, mode: str, m: int, steps: int, batch_size: int, device: str) -> dict:
    """Runs one measurement in this process; returns subsets/s, seconds and final task losses."""
    import torch

    from grasp_pipeline.config import RetrainParams
    from grasp_pipeline.training.retrain import Recipe, StackedTrainer, task_losses
    from grasp_pipeline.workloads import make_workload

    torch.manual_seed(0)
    name, params = WORKLOADS[workload_key]
    workload = make_workload(name, device=device, **params)
    inputs = _pool_inputs(workload, 2048)
    tasks = inputs[:256]
    task_index = np.arange(256) % 4
    rng = np.random.default_rng(0)
    subsets = [np.sort(rng.choice(np.arange(256, 2048), size=200, replace=False)) for _ in range(m)]
    seeds = [(0, i) for i in range(m)]
    trainer = StackedTrainer(workload, Recipe.from_params(RetrainParams(), steps=steps, batch_size=batch_size))
    trainer.train(inputs, subsets[:1], seeds[:1])  # warm-up: first-call overheads are not throughput
    if mode == "sequential":
        eager_train(workload, trainer.recipe, inputs, subsets[0], seeds[0])
    began = time.perf_counter()
    if mode == "batched":
        params_stack = trainer.train(inputs, subsets, seeds)
        losses = task_losses(trainer.example_losses(params_stack, tasks), task_index, ["a", "b", "c", "d"])
        trained = m
    elif mode == "sequential":
        trained = min(m, 8)
        finals = [eager_train(workload, trainer.recipe, inputs, subsets[i], seeds[i]) for i in range(trained)]
        stacked = {n: torch.stack([f[n] for f in finals]) for n in finals[0]}
        losses = task_losses(trainer.example_losses(stacked, tasks), task_index, ["a", "b", "c", "d"])
    else:  # functional_m1
        trained = min(m, 8)
        losses = np.concatenate([
            task_losses(trainer.example_losses(trainer.train(inputs, [subsets[i]], [seeds[i]]), tasks),
                        task_index, ["a", "b", "c", "d"]) for i in range(trained)])
    seconds = time.perf_counter() - began
    return {"workload": workload_key, "mode": mode, "m": m, "subsets_trained": trained, "seconds": seconds,
            "subsets_per_second": trained / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_losses": losses.tolist()}


DEMO_SUBSET_SIZE = 360  # about the mean subset size of the demo plan


def demo_cell(mode: str, subsets: int, threads: int, device: str) -> dict:
    """Trains `subsets` subsets of the demo recipe one way; returns subsets/s and the final task losses."""
    import torch

    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.training.retrain import Recipe, retrain_subsets, task_losses

    params = with_overrides(load_params("demo"), {"workload": {"device": device}})
    workload = params.workload.build()
    if threads:
        torch.set_num_threads(threads)
    recipe = Recipe.from_params(params.retrain)
    inputs = _pool_inputs(workload, 2048)
    tasks, task_index, names = inputs[:256], np.arange(256) % 4, ["a", "b", "c", "d"]
    rng = np.random.default_rng(0)
    members = [(i, np.sort(rng.choice(np.arange(256, 2048), size=DEMO_SUBSET_SIZE, replace=False)))
               for i in range(subsets)]
    began = time.perf_counter()
    if mode == "demo_pipeline":
        outcomes = retrain_subsets(workload, recipe, inputs, members, tasks, task_index, names,
                                   models_per_batch=params.retrain.models_per_batch,
                                   workers=params.retrain.workers, compile=params.retrain.compile)
        losses = np.stack([o.task_loss for o in outcomes])
    else:
        from grasp_pipeline.training.retrain import StackedTrainer

        finals = [eager_train(workload, recipe, inputs, rows, (recipe.data_order_seed, i)) for i, rows in members]
        stacked = {n: torch.stack([f[n] for f in finals]) for n in finals[0]}
        losses = task_losses(StackedTrainer(workload, recipe).example_losses(stacked, tasks), task_index, names)
    seconds = time.perf_counter() - began
    return {"workload": params.workload.name, "mode": mode, "m": params.retrain.models_per_batch,
            "subsets_trained": subsets, "seconds": seconds, "subsets_per_second": subsets / seconds,
            "torch_threads": torch.get_num_threads(), "steps": recipe.steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "final_losses": losses.tolist()}


def demo_comparison(quick: bool, device: str) -> tuple[list[dict], dict]:
    """Interleaved pairs of the demo recipe's pipeline path and the conventional loop; returns (cells, ratios)."""
    pairs, subsets, conventional_subsets = (3, 16, 4) if quick else (3, 32, 8)
    cells, ratios, one_thread, diffs = [], [], [], []
    for _ in range(pairs):
        conventional = run_demo_cell("demo_conventional", conventional_subsets, 0, device)
        pipeline = run_demo_cell("demo_pipeline", subsets, 0, device)
        single = run_demo_cell("demo_conventional_one_thread", conventional_subsets, 1, device)
        cells += [conventional, pipeline, single]
        if not any("error" in c for c in (conventional, pipeline, single)):
            ratios.append(pipeline["subsets_per_second"] / conventional["subsets_per_second"])
            one_thread.append(pipeline["subsets_per_second"] / single["subsets_per_second"])
            diffs.append(float(np.abs(np.asarray(pipeline["final_losses"][:conventional_subsets])
                                      - np.asarray(conventional["final_losses"])).max()))
    out = {"demo_recipe_over_conventional": float(np.median(ratios)) if ratios else None,
           "demo_recipe_over_conventional_one_thread": float(np.median(one_thread)) if one_thread else None,
           "demo_recipe_over_conventional_each_pair": ratios,
           "demo_max_abs_final_loss_diff": max(diffs) if diffs else None}
    return cells, out


def run_demo_cell(mode: str, subsets: int, threads: int, device: str) -> dict:
    command = [sys.executable, __file__, "--demo-cell", json.dumps([mode, subsets, threads, device])]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed", "mode": mode}
    row = json.loads(completed.stdout.strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in row.items() if k != "final_losses"}), file=sys.stderr, flush=True)
    return row


def eager_train(workload, recipe, inputs, rows, seed) -> dict:
    """One model, the conventional way: module, torch.optim.Adam, backward (same init and data order)."""
    import torch

    from grasp_pipeline.training import retrain
    from grasp_pipeline.training.retrain import batch_schedule

    model = workload.build_model(recipe.init_seed)
    optimizer = (torch.optim.Adam(model.parameters(), lr=recipe.lr, betas=(recipe.adam_beta1, recipe.adam_beta2),
                                  eps=recipe.adam_eps) if recipe.optimizer == "adam"
                 else torch.optim.SGD(model.parameters(), lr=recipe.lr))
    schedule = getattr(recipe, "lr_schedule", "constant")  # the recipe's schedule, where it has one
    factor = getattr(retrain, "lr_factor", lambda name, step, steps: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(schedule, step, recipe.steps))
    order = np.asarray(rows)[batch_schedule(len(rows), recipe.steps, recipe.batch_size, seed)]
    order = torch.as_tensor(order, device=inputs.device)
    for step in range(recipe.steps):
        optimizer.zero_grad(set_to_none=True)
        workload.example_losses(model, inputs[order[step]]).mean().backward()
        optimizer.step()
        scheduler.step()
    return {n: p.detach() for n, p in model.named_parameters()}


def run_cell(*args) -> dict:
    command = [sys.executable, __file__, "--cell", json.dumps(args)]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ})
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr else "failed",
                "workload": args[0], "mode": args[1], "m": args[2]}
    return json.loads(completed.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (finishes within 10 minutes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--demo-cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(*json.loads(args.cell))))
        return 0
    if args.demo_cell:
        print(json.dumps(demo_cell(*json.loads(args.demo_cell))))
        return 0
    demo_cells, demo_ratios = demo_comparison(args.quick, args.device)
    steps = 5 if args.quick else 20
    sizes = {"default": [1, 8, 32, 64], "transformer": [1, 8, 32] if args.quick else [1, 8, 32, 64]}
    rows, ratios, extra, diffs = [], {}, {}, []
    for key, ms in sizes.items():
        best = best_m1 = 0.0
        sequential = run_cell(key, "sequential", 8, steps, 16, args.device)
        functional_m1 = run_cell(key, "functional_m1", 8, steps, 16, args.device)
        rows += [sequential, functional_m1]
        if "error" in sequential or "error" in functional_m1:
            ratios[f"batched_over_sequential_{key}"] = None
            continue
        for m in ms:
            batched = run_cell(key, "batched", m, steps, 16, args.device)
            rows.append(batched)
            print(json.dumps({k: v for k, v in batched.items() if k != "final_losses"}), file=sys.stderr, flush=True)
            if "error" in batched:
                continue
            batched["over_sequential"] = batched["subsets_per_second"] / sequential["subsets_per_second"]
            batched["over_functional_m1"] = batched["subsets_per_second"] / functional_m1["subsets_per_second"]
            best = max(best, batched["over_sequential"])
            best_m1 = max(best_m1, batched["over_functional_m1"])
            if m == 8:  # the same 8 subsets and seeds every way: losses must agree
                diffs += [float(np.max(np.abs(np.asarray(batched["final_losses"]) - np.asarray(base["final_losses"]))))
                          for base in (sequential, functional_m1)]
        ratios[f"batched_over_sequential_{key}"] = best
        extra[f"batched_over_functional_m1_{key}"] = best_m1
    ratios["max_abs_final_loss_diff"] = max(diffs) if diffs else None
    ratios.update(demo_ratios)
    rows += demo_cells
    for row in rows:
        row.pop("final_losses", None)
    print(json.dumps({"steps": steps, "batch_size": 16, "device": args.device, "cells": rows, "ratios": ratios,
                      "ratios_vs_our_one_model_path": extra}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Batched vs sequential subset retraining: subsets per second, peak memory, loss agreement.

    python bench/retrain.py [--quick] [--device cpu]

Prints one JSON object. Every (workload, mode, M) cell runs in its own subprocess so that
its peak resident memory is its own. Sequential throughput is measured on min(M, 8) subsets
trained one after another (its rate does not depend on M); batched trains all M subsets in
one vmapped loop. `ratios` compares them side by side in the same run.
"""

from __future__ import annotations

import os
import sys

# bench/select.py would shadow the standard library's `select` (imported by subprocess)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

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

    from grasp_pipeline.retrain import Recipe, StackedTrainer, task_losses
    from grasp_pipeline.workload import make_workload

    torch.manual_seed(0)
    name, params = WORKLOADS[workload_key]
    workload = make_workload(name, device=device, **params)
    inputs = _pool_inputs(workload, 2048)
    tasks = inputs[:256]
    task_index = np.arange(256) % 4
    rng = np.random.default_rng(0)
    subsets = [np.sort(rng.choice(np.arange(256, 2048), size=200, replace=False)) for _ in range(m)]
    seeds = [(0, i) for i in range(m)]
    trainer = StackedTrainer(workload, Recipe(steps=steps, batch_size=batch_size))
    trainer.train(inputs, subsets[:1], seeds[:1])  # warm-up: first-call overheads are not throughput
    began = time.perf_counter()
    if mode == "batched":
        params_stack = trainer.train(inputs, subsets, seeds)
        losses = task_losses(trainer.example_losses(params_stack, tasks), task_index, ["a", "b", "c", "d"])
        trained = m
    else:
        trained = min(m, 8)
        losses = np.concatenate([
            task_losses(trainer.example_losses(trainer.train(inputs, [subsets[i]], [seeds[i]]), tasks),
                        task_index, ["a", "b", "c", "d"]) for i in range(trained)])
    seconds = time.perf_counter() - began
    return {"workload": workload_key, "mode": mode, "m": m, "subsets_trained": trained, "seconds": seconds,
            "subsets_per_second": trained / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_losses": losses.tolist()}


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
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(*json.loads(args.cell))))
        return 0
    steps = 5 if args.quick else 20
    sizes = {"default": [1, 8, 32, 64], "transformer": [1, 8, 32] if args.quick else [1, 8, 32, 64]}
    rows, ratios, diffs = [], {}, []
    for key, ms in sizes.items():
        best = 0.0
        sequential = run_cell(key, "sequential", 8, steps, 16, args.device)
        rows.append(sequential)
        if "error" in sequential:
            ratios[f"batched_over_sequential_{key}"] = None
            continue
        for m in ms:
            batched = run_cell(key, "batched", m, steps, 16, args.device)
            rows.append(batched)
            print(json.dumps({k: v for k, v in batched.items() if k != "final_losses"}), file=sys.stderr, flush=True)
            if "error" in batched:
                continue
            batched["over_sequential"] = batched["subsets_per_second"] / sequential["subsets_per_second"]
            best = max(best, batched["over_sequential"])
            if m == 8:  # the same 8 subsets and seeds both ways: losses must agree
                diffs.append(float(np.max(np.abs(np.asarray(batched["final_losses"])
                                                 - np.asarray(sequential["final_losses"])))))
        ratios[f"batched_over_sequential_{key}"] = best
    ratios["max_abs_final_loss_diff"] = max(diffs) if diffs else None
    for row in rows:
        row.pop("final_losses", None)
    print(json.dumps({"steps": steps, "batch_size": 16, "device": args.device, "cells": rows, "ratios": ratios},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

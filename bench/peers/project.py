"""Runs a peer library's CPU projector on saved gradients (inside bench/.peers-venv).

    bench/.peers-venv/bin/python bench/peers/project.py GRADS.npy OUT_DIR --ks 64 256 1024 --chunk 64

GRADS.npy holds (n, p) float32 flat per-example gradients. For each peer that imports and
each k, the gradients are projected chunk by chunk (one `project` call per chunk, as the
peers' own pipelines call it per batch) with a projector built once; the (n, k) sketches
are saved as OUT_DIR/{peer}_k{k}.npy and one JSON object with timings (and a note for a
peer that could not be used) is printed. Sketches are scaled by 1/√k so their inner
products estimate the gradients' (TRAK's BasicProjector returns unscaled P g).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch


def trak_projector(p: int, k: int, seed: int):
    from trak.projectors import BasicProjector, ProjectionType

    # what TRAKer builds on CPU: BasicProjector, normal entries, default block_size (100)
    projector = BasicProjector(grad_dim=p, proj_dim=k, seed=seed, proj_type=ProjectionType.normal,
                               device=torch.device("cpu"), dtype=torch.float32)
    return lambda g: projector.project(g, model_id=0) / math.sqrt(k), {
        "version": _version("traker"), "class": "trak.projectors.BasicProjector", "proj_type": "normal",
        "block_size": projector.block_size}


def dattri_projector(p: int, k: int, seed: int):
    from dattri.func.projection import random_project

    # dattri's public entry point; on CPU it builds a BasicProjector (normal, block_size 100)
    project = random_project(torch.zeros(1, p), 1, proj_dim=k, proj_max_batch_size=32, proj_seed=seed,
                             proj_type="normal", device="cpu")
    return lambda g: project(g), {"version": _version("dattri"), "function": "dattri.func.projection.random_project",
                                  "proj_type": "normal"}


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


PEERS = {"traker": trak_projector, "dattri": dattri_projector}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("grads")
    parser.add_argument("out_dir")
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    grads = torch.from_numpy(np.load(args.grads))
    n, p = grads.shape
    result = {"n": n, "p": p, "torch": torch.__version__, "threads": torch.get_num_threads(), "peers": {}}
    for peer, build in PEERS.items():
        entry: dict = {"cells": []}
        try:
            for k in args.ks:
                began = time.perf_counter()
                project, info = build(p, k, args.seed)
                setup = time.perf_counter() - began
                began = time.perf_counter()
                sketch = torch.cat([project(grads[lo:lo + args.chunk]) for lo in range(0, n, args.chunk)])
                seconds = time.perf_counter() - began
                np.save(os.path.join(args.out_dir, f"{peer}_k{k}.npy"), sketch.float().numpy())
                entry.update(info)
                entry["cells"].append({"k": k, "seconds": seconds, "setup_seconds": setup,
                                       "examples_per_second": n / seconds})
        except Exception as error:  # a peer that cannot run is skipped with a note
            entry["skipped"] = f"{type(error).__name__}: {error}"
        result["peers"][peer] = entry
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

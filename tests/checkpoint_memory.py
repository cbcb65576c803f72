"""Writes a synthetic state dict as checkpoint files, records them in reference_models and reads
them back, measuring how far the resident set grows at its peak in each phase (Linux only).

    python -m tests.checkpoint_memory ROOT TENSORS NUMEL SHARD_MIB

prints one JSON line: write_growth and read_growth (bytes), files, equal (the read-back equals
what was written). Run in a process of its own, so the peaks are this script's alone.
"""

from __future__ import annotations

import gc
import json
import re
import sys

import polars as pl
import torch

from grasp_pipeline.infra.checkpoint_files import checkpoint_location, read_state, write_state
from grasp_pipeline.infra.storage import FILE_ENTRY, DeltaStore


def tensor(i: int, numel: int) -> torch.Tensor:
    """Tensor i: distinct values in every tensor and position, cheap to rebuild (randn takes longer)."""
    return torch.arange(numel, dtype=torch.float32).add_(i * numel)


def status(key: str) -> int:
    """A /proc/self/status memory figure (VmRSS, VmHWM) in bytes."""
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) * 1024


def measured(call):
    """Returns (call's result, how far the resident set grew at its peak during the call, bytes)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM, the peak resident set, to the current one
    before = status("VmRSS")
    result = call()
    return result, status("VmHWM") - before


def main(root: str, tensors: int, numel: int, shard_mib: int) -> dict:
    store = DeltaStore(root)
    names = [f"layer{i:02d}.weight" for i in range(tensors)]
    state = {name: tensor(i, numel) for i, name in enumerate(names)}
    files, write_growth = measured(lambda state=state: write_state(
        checkpoint_location(store), "checkpoints/synthetic/step-000001", state, 1, shard_mib << 20))
    store.write("reference_models", pl.DataFrame({
        "model_version": ["synthetic"], "path": [store.uri("reference_models")], "workload": ["{}"],
        "parameters": [tensors * numel], "warmup_loss": [0.0], "state": [files], "checkpoints": [files]},
        schema_overrides={"state": pl.List(FILE_ENTRY), "checkpoints": pl.List(FILE_ENTRY)}))
    del state
    entries = store.read("reference_models").row(0, named=True)["checkpoints"]
    loaded, read_growth = measured(lambda: read_state(checkpoint_location(store), entries))
    equal = sorted(loaded) == names and all(torch.equal(loaded[n], tensor(i, numel)) for i, n in enumerate(names))
    return {"write_growth": write_growth, "read_growth": read_growth, "files": len(files), "equal": equal}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], *map(int, sys.argv[2:5]))))

"""Checkpoints as files beside the tables: sharded, hashed in the table row, verified on load,
bounded in memory, on local and object-store roots."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from grasp_pipeline import stages
from grasp_pipeline.infra.checkpoint_files import CheckpointFileError, checkpoint_location, read_state, write_state
from grasp_pipeline.infra.objectstore import ObjectLocation
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.stages.tables import checkpoint_fingerprint

from .conftest import build_tables_until, tiny_params

REPO = Path(__file__).resolve().parents[1]

# 25 tensors of 8M float32: 200M parameters, 800 MB; 64 MiB shards (two tensors each)
TENSORS, NUMEL, SHARD_MIB = 25, 8 << 20, 64
MODEL_BYTES = TENSORS * NUMEL * 4


@pytest.fixture(scope="module")
def synthetic_200m(tmp_path_factory):
    """A 200M-parameter float32 state dict written as shard files, its row in reference_models, and
    read back, in a process of its own (so its peak memory is its own); returns (root, its report)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("measuring peak memory per phase needs Linux /proc/self/clear_refs")
    root = tmp_path_factory.mktemp("synthetic") / "root"
    done = subprocess.run([sys.executable, "-m", "tests.checkpoint_memory", str(root), str(TENSORS), str(NUMEL),
                           str(SHARD_MIB)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


def test_a_200m_parameter_state_dict_is_written_in_shards_under_a_memory_bound(synthetic_200m):
    _, written = synthetic_200m
    assert written["files"] == -(-TENSORS // 2)  # two 32 MiB tensors per 64 MiB shard
    # the whole model serialised as one cell would add at least its own size; shards add a few shards
    assert written["write_growth"] < MODEL_BYTES / 2, written


def test_the_row_records_each_files_sha256_and_size(synthetic_200m):
    root, _ = synthetic_200m
    entries = DeltaStore(str(root)).read("reference_models").row(0, named=True)["checkpoints"]
    for entry in entries:
        data = (root / entry["file"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["bytes"])
    assert sum(e["bytes"] for e in entries) > MODEL_BYTES


def test_a_200m_parameter_state_dict_loads_equal_under_a_memory_bound(synthetic_200m):
    _, loaded = synthetic_200m
    assert loaded["equal"]
    # the tensors themselves are the model's size; one cell would hold the bytes and the tensors (2×)
    assert loaded["read_growth"] < 1.5 * MODEL_BYTES, loaded


# ----------------------------------------------------------------------------- the reference stage's files


@pytest.fixture
def reference_root(tmp_path):
    """A root with corpus tables and a reference model (θ and its checkpoints as files)."""
    params = tiny_params()
    store = build_tables_until(tmp_path / "root", "reference_model", params)
    return store, params


def checkpoint_files(store) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in Path(store.root, "checkpoints").rglob("*") if p.is_file())


def test_the_reference_row_names_every_checkpoint_file_and_nothing_else_is_written(reference_root):
    store, _ = reference_root
    row = store.read("reference_models").row(0, named=True)
    named = sorted(e["file"] for e in row["state"] + row["checkpoints"])
    assert checkpoint_files(store) == named
    assert all(f.startswith(f"checkpoints/{row['model_version']}/") for f in named)


def test_rerunning_the_reference_stage_writes_the_same_files(reference_root):
    store, params = reference_root
    first = store.read("reference_models").row(0, named=True)
    stages.run_reference_model(store, params.workload.build(), params.reference)
    second = store.read("reference_models").row(0, named=True)
    assert (second["state"], second["checkpoints"]) == (first["state"], first["checkpoints"])
    assert checkpoint_files(store) == sorted(e["file"] for e in first["state"] + first["checkpoints"])


def test_a_corrupted_checkpoint_file_is_refused_naming_it(reference_root):
    store, params = reference_root
    entry = store.read("reference_models").row(0, named=True)["checkpoints"][-1]
    path = Path(store.root, entry["file"])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFileError, match=f"{entry['file']} does not match its table row"):
        stages.load_reference_checkpoints(store, params.workload.build())


def test_a_missing_checkpoint_file_is_refused_naming_it(reference_root):
    store, params = reference_root
    entry = store.read("reference_models").row(0, named=True)["state"][0]
    Path(store.root, entry["file"]).unlink()
    with pytest.raises(CheckpointFileError, match=f"{entry['file']} is missing"):
        stages.load_reference_model(store, params.workload.build())


def test_the_loaded_checkpoints_are_the_ones_the_model_version_hashes(reference_root):
    store, params = reference_root
    version, checkpoints = stages.load_reference_checkpoints(store, params.workload.build())
    assert [step for step, _ in checkpoints] == sorted(params.reference.sketch_steps)
    assert checkpoint_fingerprint(dict(checkpoints)) == version


# ----------------------------------------------------------------------------- local and object-store roots


def test_shard_files_round_trip_in_order(any_root):
    location = checkpoint_location(DeltaStore(any_root))
    names = ["w3", "w0", "w4", "w1", "w2"]  # not sorted: the order is part of the model (workloads flatten by it)
    state = {n: torch.randn(64, 32, generator=torch.Generator().manual_seed(i)) for i, n in enumerate(names)}
    entries = write_state(location, "checkpoints/v/step-000003", state, 3, shard_bytes=3 * 64 * 32 * 4)
    assert [e["tensors"] for e in entries] == [names[:3], names[3:]]
    assert sorted(name for name, _ in location.list("checkpoints")) == sorted(e["file"] for e in entries)
    loaded = read_state(location, entries)
    assert list(loaded) == names and all(torch.equal(loaded[n], state[n]) for n in names)


def test_the_reference_stage_stores_and_loads_its_checkpoints_on_an_object_store_root(s3_root):
    params = tiny_params()
    store = build_tables_until(s3_root, "reference_model", params)
    version, checkpoints = stages.load_reference_checkpoints(store, params.workload.build())
    assert checkpoint_fingerprint(dict(checkpoints)) == version
    row = store.read("reference_models").row(0, named=True)
    listed = sorted(name for name, _ in checkpoint_location(store).list("checkpoints"))
    assert listed == sorted(e["file"] for e in row["state"] + row["checkpoints"])


def test_a_file_being_written_on_a_local_root_is_never_visible_under_its_name_in_part(tmp_path):
    """ObjectLocation.put stages the bytes under another name and renames them into place: a
    watcher polling the final name while 64 MiB are written only ever sees the whole file."""
    location, data = ObjectLocation(str(tmp_path)), bytes(64 << 20)
    path, seen, done = tmp_path / "shards" / "one.bin", set(), threading.Event()

    def watch():
        while not done.is_set():
            if path.exists():
                seen.add(path.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    location.put("shards/one.bin", data)
    done.set()
    watcher.join()
    assert path.stat().st_size == len(data) and seen <= {len(data)}

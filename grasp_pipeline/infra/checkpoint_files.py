"""Parameter dicts (the reference model's checkpoints and θ₀) as files beside the tables.

A Parquet cell holds at most about 2 GiB, and serialising a whole model into one cell holds
it twice in memory, so a state dict is written tensor by tensor into shards of at most
`shard_bytes` (a tensor larger than that gets a shard of its own):

    <root>/checkpoints/<model_version>/<label>/shard-<i>-<sha256[:16]>.safetensors

(`.pt`, one `torch.save` per shard, when safetensors is not installed). Each shard is
serialised in memory and written in one put (a single PUT on object stores; on a local disk
a staged file renamed into place), so a reader never sees part of a file and writing holds
about one shard twice (its tensors' bytes and the serialised file), never the whole model.
Names carry the content hash, so a rerun writes the same names with the same bytes, and
files are never overwritten with different content. The table row keeps, per file, its
path (relative to the storage root), sha256 and size; loading checks both and names the
file when it is missing or differs.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator

import torch

from .objectstore import ObjectLocation

FOLDER = "checkpoints"


class CheckpointFileError(RuntimeError):
    """A checkpoint file a table row names is missing or does not hash to the recorded sha256."""


def _safetensors():
    """The safetensors torch module, or None when safetensors is not installed (then torch.save)."""
    try:
        import safetensors.torch
    except ImportError:
        return None
    return safetensors.torch


def checkpoint_location(store) -> ObjectLocation:
    """The storage root of `store` (a DeltaStore or a view of one) as a plain-object location."""
    return ObjectLocation(store.root, store.storage_options or None)


def shard_names(state: dict[str, torch.Tensor], shard_bytes: int) -> Iterator[list[str]]:
    """Yields the tensor names of each shard, in the state dict's order, each shard at most
    `shard_bytes` bytes of tensor data (or one tensor, when that alone is larger)."""
    shard, size = [], 0
    for name in state:
        nbytes = state[name].numel() * state[name].element_size()
        if shard and size + nbytes > shard_bytes:
            yield shard
            shard, size = [], 0
        shard.append(name)
        size += nbytes
    if shard:
        yield shard


def serialise(tensors: dict[str, torch.Tensor]) -> tuple[bytes, str]:
    """Returns (file bytes, file suffix) of one shard: safetensors if installed, else torch.save."""
    module = _safetensors()
    if module is not None:
        return module.save(tensors), ".safetensors"
    buffer = io.BytesIO()
    torch.save({n: t.clone() for n, t in tensors.items()}, buffer)  # a view would save its whole storage
    return buffer.getvalue(), ".pt"


def deserialise(data: bytes, file: str) -> dict[str, torch.Tensor]:
    """The tensors of one shard file's bytes (on the CPU)."""
    if file.endswith(".safetensors"):
        module = _safetensors()
        if module is None:
            raise CheckpointFileError(f"checkpoint file {file} is a safetensors file, but safetensors is not "
                                      "installed (pip install safetensors)")
        return module.load(data)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _own_storage(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors detached, contiguous and on the CPU, none sharing storage with another (tied
    weights are copied: safetensors refuses shared storage)."""
    seen, own = set(), {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        own[name] = tensor.clone() if pointer in seen else tensor
        seen.add(pointer)
    return own


def write_state(location: ObjectLocation, folder: str, state: dict[str, torch.Tensor], step: int,
                shard_bytes: int) -> list[dict]:
    """Writes `state` as shard files under `folder` (relative to `location`); returns one entry per
    file: {"step": step, "file": its path relative to `location`, "sha256", "bytes": its size,
    "tensors": the names it holds, in the state dict's order}."""
    entries = []
    for i, names in enumerate(shard_names(state, shard_bytes)):
        data, suffix = serialise(_own_storage({n: state[n] for n in names}))
        digest = hashlib.sha256(data).hexdigest()
        file = f"{folder}/shard-{i:05d}-{digest[:16]}{suffix}"
        location.put(file, data)
        entries.append({"step": step, "file": file, "sha256": digest, "bytes": len(data), "tensors": names})
        del data  # before the next shard is serialised: one shard in memory at a time
    return entries


def read_state(location: ObjectLocation, entries: list[dict], device: torch.device | str = "cpu"
               ) -> dict[str, torch.Tensor]:
    """Returns the state dict the file `entries` (as write_state returns) hold, on `device`, in the
    order it was written (a workload flattens parameters in dict order: the order is part of the model).

    Raises CheckpointFileError naming the file when one is missing or its size or sha256
    differs from the entry's (a truncated, corrupted or replaced file).
    """
    state = {}
    for entry in entries:
        where = f"{location.uri}/{entry['file']}"
        data = location.get(entry["file"])
        if data is None:
            raise CheckpointFileError(f"checkpoint file {where} is missing (the table row names it, step "
                                      f"{entry['step']}); restore it from a backup or rematerialise reference_model")
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry["bytes"] or digest != entry["sha256"]:
            raise CheckpointFileError(f"checkpoint file {where} does not match its table row: {len(data)} bytes, "
                                      f"sha256 {digest}; the row records {entry['bytes']} bytes, sha256 "
                                      f"{entry['sha256']}; restore it from a backup or rematerialise reference_model")
        tensors = deserialise(data, entry["file"])  # safetensors returns them in no fixed order
        state.update({n: tensors[n].to(device) for n in entry["tensors"]})
        del data
    return state

"""Gradient sketches: per-example gradients at θ₀, randomly projected to k dimensions.

Per-example gradients come from `torch.func.vmap(grad(loss))` over a chunk of examples
(chunk size bounds memory), then a seeded projector maps each flat gradient (p values) to
a k-dimensional sketch z = P g. Projectors are interchangeable (TRAK's projectors.py shape):

- `gaussian` / `rademacher`: dense P with N(0, 1/k) / ±1/√k entries, generated block by
  block of parameter rows from (seed, block), so the p×k matrix never exists at once when
  p is large; small problems cache the blocks.
- `sjlt`: sparse JL (CountSketch with c nonzeros per input coordinate, ±1/√c), applied with
  `index_add_`; far cheaper than a dense matmul on CPU.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from .retrain import Params
from .workload import Workload

PROJECTIONS = ("gaussian", "rademacher", "sjlt")


class Projector(ABC):
    """Maps (n, p) flat gradients to (n, k) sketches, deterministically from a seed."""

    kind: str

    def __init__(self, p: int, k: int, seed: int):
        self.p, self.k, self.seed = p, k, seed

    @abstractmethod
    def project(self, flat: torch.Tensor) -> torch.Tensor:
        """Returns (n, k) float32 sketches of (n, p) gradients."""

    def config(self) -> dict:
        return {"projection": self.kind, "k": self.k, "seed": self.seed, "p": self.p}


class DenseProjector(Projector):
    """Dense Gaussian or Rademacher projection, generated in blocks of parameter rows."""

    def __init__(self, p: int, k: int, seed: int, kind: str = "gaussian",
                 block_rows: int = 8192, cache_bytes: int = 256 << 20):
        super().__init__(p, k, seed)
        self.kind = kind
        self.block_rows = block_rows
        self._cache: dict[int, torch.Tensor] | None = {} if p * k * 4 <= cache_bytes else None

    def _block(self, index: int, device: torch.device) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rows = min(self.block_rows, self.p - index * self.block_rows)
        # seeding per block keeps any block reproducible without generating the ones before it
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.kind == "gaussian":
            block = torch.randn(rows, self.k, generator=generator)
        else:
            block = torch.randint(0, 2, (rows, self.k), generator=generator).float() * 2 - 1
        block = (block / math.sqrt(self.k)).to(device)
        if self._cache is not None:
            self._cache[index] = block
        return block

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(flat.shape[0], self.k, device=flat.device, dtype=torch.float32)
        for index in range(-(-self.p // self.block_rows)):
            lo = index * self.block_rows
            out += flat[:, lo:lo + self.block_rows].float() @ self._block(index, flat.device)
        return out


class SJLTProjector(Projector):
    """Sparse JL: each input coordinate adds ±g_j/√c to c hashed output coordinates."""

    kind = "sjlt"

    def __init__(self, p: int, k: int, seed: int, nonzeros: int = 4):
        super().__init__(p, k, seed)
        self.nonzeros = nonzeros
        generator = torch.Generator().manual_seed(seed)
        self.rows = torch.randint(0, k, (nonzeros, p), generator=generator)
        self.signs = (torch.randint(0, 2, (nonzeros, p), generator=generator).float() * 2 - 1) / math.sqrt(nonzeros)

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(flat.shape[0], self.k, device=flat.device, dtype=torch.float32)
        rows, signs = self.rows.to(flat.device), self.signs.to(flat.device)
        for r in range(self.nonzeros):
            out.index_add_(1, rows[r], flat.float() * signs[r])
        return out

    def config(self) -> dict:
        return {**super().config(), "nonzeros": self.nonzeros}


def make_projector(kind: str, p: int, k: int, seed: int) -> Projector:
    if kind in ("gaussian", "rademacher"):
        return DenseProjector(p, k, seed, kind=kind)
    if kind == "sjlt":
        return SJLTProjector(p, k, seed)
    raise ValueError(f"unknown projection {kind!r}; choose one of {PROJECTIONS}")


@dataclass
class Sketches:
    sketch: np.ndarray  # (n, k) float32
    grad_norm: np.ndarray  # (n,) L2 norm of the full per-example gradient
    loss: np.ndarray  # (n,) per-example loss at θ₀


class GradientSketcher:
    """Computes per-example gradient sketches of a workload's model at fixed parameters."""

    def __init__(self, workload: Workload, params: Params, projector_kind: str, k: int,
                 seed: int, chunk_size: int = 64):
        self.workload = workload
        self.model = workload.build_model(0)
        self.params = {n: p.detach().to(workload.device) for n, p in params.items()}
        self.names = list(self.params)
        p = sum(t.numel() for t in self.params.values())
        self.projector = make_projector(projector_kind, p, k, seed)
        self.chunk_size = chunk_size

        def example_loss(params: Params, example: torch.Tensor) -> torch.Tensor:
            return workload.example_losses(_Bound(self.model, params), example.unsqueeze(0))[0]

        def loss_and_grad(params: Params, example: torch.Tensor):
            return example_loss(params, example), grad(example_loss)(params, example)

        self._per_example = vmap(loss_and_grad, in_dims=(None, 0))

    def config(self, model_version: str) -> str:
        """Returns the JSON sketch_config recorded with every sketch row."""
        return json.dumps({**self.projector.config(), **self.workload.config(),
                           "model_version": model_version}, sort_keys=True)

    def _flat_grads(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses, grads = self._per_example(self.params, chunk)
        flat = torch.cat([grads[n].reshape(chunk.shape[0], -1) for n in self.names], dim=1)
        return losses.detach(), flat.detach()

    def sketch_examples(self, inputs: torch.Tensor) -> Sketches:
        """Returns the sketches of every row of `inputs`, computed chunk by chunk."""
        sketches, norms, losses = [], [], []
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat = self._flat_grads(inputs[lo:lo + self.chunk_size])
            sketches.append(self.projector.project(flat).cpu())
            norms.append(flat.norm(dim=1).cpu())
            losses.append(loss.cpu())
        return Sketches(torch.cat(sketches).numpy(), torch.cat(norms).numpy(),
                        torch.cat(losses).numpy())

    def sketch_mean_gradient(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        """Returns (q, loss): the sketch of ∇θ of the mean loss over `inputs`, and that loss."""
        total = None
        loss_sum = 0.0
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat = self._flat_grads(inputs[lo:lo + self.chunk_size])
            part = flat.sum(0, keepdim=True)
            total = part if total is None else total + part
            loss_sum += float(loss.sum())
        # P is linear, so projecting the mean gradient equals the mean of the sketches
        return self.projector.project(total / inputs.shape[0])[0].cpu().numpy(), loss_sum / inputs.shape[0]


class _Bound(torch.nn.Module):
    """Calls a module with an explicit parameter dict (functional_call behind a Module face)."""

    def __init__(self, model: torch.nn.Module, params: Params):
        super().__init__()
        self._model, self._params = [model], params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model[0], self._params, (x,))

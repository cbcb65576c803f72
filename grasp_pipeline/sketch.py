"""Gradient sketches: per-example gradients at θ₀, randomly projected to k dimensions.

Every projection is a fixed linear map P (k × p) drawn from a seed, so z_i = P g_i and the
sketch of a mean gradient is the mean of the sketches. Four kinds, one interface
(`Projector.project(flat)` on (n, p) flat gradients, TRAK's projectors.py shape):

- `gaussian` / `rademacher`: dense P with N(0, 1/k) / ±1/√k entries (Rademacher signs are
  unpacked from 32-bit random words), generated block by block of parameter rows from
  (seed, block), so the p×k matrix never exists at once when
  p is large; small problems (p·k·4 ≤ 256 MB) cache the blocks. When they are not cached,
  `GradientSketcher` buffers the flat gradients of several chunks (`dense_buffer_bytes`)
  and projects the buffer with blocks outer, examples inner, so each block is generated
  once per buffer instead of once per chunk; block generation runs on worker threads ahead
  of the matmuls. Memory is bounded by the buffer, not by the pool.
- `sjlt`: sparse JL (CountSketch with c nonzeros per input coordinate, ±1/√c), stored in
  CSR form and applied as one `embedding_bag` over the transposed (p, n) chunk of
  gradients, which `GradientSketcher` writes parameter by parameter straight into a reused
  buffer (no flat (n, p) copy). On CPU this is ~2× faster than a CSR sparse-dense product
  and ~5× faster than `index_add_`/`scatter_add_`; on the 0.9M-parameter transformer it
  adds ~5% to the per-example gradient time at any k. Works on CUDA unchanged.
- `kronecker` (LoGra-style): for every `nn.Linear` the sketch of the layer's weight (and
  bias) gradient is Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ over positions t, from the layer's
  input activations a_t and output gradients δ_t, captured with forward hooks on one
  batched `functional_call` (the per-example losses are independent, so one backward of
  their sum yields every example's δ). The per-example full gradient is never
  materialised. `nn.Embedding` is treated the same way with one-hot inputs (P_in a_t is a
  column of P_in). `nn.LayerNorm` weights/biases (tiny) enter exactly (Σ_t δ_t ⊙ x̂_t,
  Σ_t δ_t). The concatenated per-layer blocks (Σ_l k_in·k_out + LayerNorm sizes values) are
  then mapped to exactly k dimensions by a second, seeded SJLT, so any k works and the
  pool and task sketches share one space. Any other module that owns parameters, and
  parameters shared between modules, are refused with an error that names them (use
  `sjlt`). P_in/P_out are N(0, 1/k_side); a side whose width is ≤ `factor_dim` is kept
  exact (identity), so small layers are not compressed at all.
  Expected error: for a rank-1 layer gradient δaᵀ the sketch's squared norm is
  ‖P_out δ‖²‖P_in a‖², relative sd ≈ √(2/k_out + 2/k_in) (0.35 at factor_dim 32) whatever
  k is; sums over many positions and layers average some of it out. On the byte models it
  measured 3–6× the pair error of dense/SJLT at k = 1024 (bench/sketch.py), so it is an
  option for wide layers (d ≫ factor_dim, where it also saves the most compute and memory),
  not the default.

Default: `sjlt` — at equal k its inner-product error matches dense Gaussian (within
noise) while its cost is nearly that of the per-example gradients alone, at any k.

Per-example gradients for the flat projections come from `torch.func.vmap(grad(loss))`
over a chunk of examples (chunk size bounds memory). `storage_dtype` ("float16" or
"bfloat16") rounds sketches to that precision while keeping float32 arrays: a Delta
`list[float32]` column of rounded values compresses to the size of 16-bit storage, and
readers need no change.
"""

from __future__ import annotations

import json
import math
import sys
import zlib
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .retrain import Params
from .workload import Workload

PROJECTIONS = ("gaussian", "rademacher", "sjlt", "kronecker")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_NONZEROS = 4
DEFAULT_FACTOR_DIM = 32


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


# row b: the 8 bits of byte b (least significant first) as ±1
_SIGN_TABLE = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).float() * 2 - 1


class DenseProjector(Projector):
    """Dense Gaussian or Rademacher projection, generated in blocks of parameter rows."""

    def __init__(self, p: int, k: int, seed: int, kind: str = "gaussian",
                 block_rows: int = 8192, cache_bytes: int = 256 << 20, workers: int | None = None):
        super().__init__(p, k, seed)
        if kind not in ("gaussian", "rademacher"):
            raise ValueError(f"dense projection kind must be gaussian or rademacher, not {kind!r}")
        self.kind = kind
        self.block_rows = block_rows
        self.n_blocks = -(-p // block_rows)
        self.fully_cached = p * k * 4 <= cache_bytes
        self._cache: dict[int, torch.Tensor] | None = {} if self.fully_cached else None
        # blocks are generated on worker threads ahead of the matmuls (generation is
        # single-threaded in torch and dominates when the matrix is not cached)
        self.workers = workers if workers is not None else max(1, min(4, torch.get_num_threads()))

    def _block(self, index: int, device: torch.device) -> torch.Tensor:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        rows = min(self.block_rows, self.p - index * self.block_rows)
        # seeding per block keeps any block reproducible without generating the ones before it
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        if self.kind == "gaussian":
            block = torch.randn(rows, self.k, generator=generator)
        else:  # 32 signs per random word, 8 at a time through a byte → signs table
            words = torch.randint(0, 2 ** 32, (rows, -(-self.k // 32)), generator=generator, dtype=torch.int64)
            as_bytes = words.view(torch.uint8).view(rows, -1, 8)  # native byte order
            low_bytes = as_bytes[:, :, :4] if sys.byteorder == "little" else as_bytes[:, :, 4:]
            block = F.embedding(low_bytes.reshape(rows, -1).int(), _SIGN_TABLE).reshape(rows, -1)[:, :self.k]
        block = (block / math.sqrt(self.k)).to(device)
        if self._cache is not None:
            self._cache[index] = block
        return block

    def _blocks(self, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields (index, block) in order; uncached blocks are generated `workers` ahead."""
        if self._cache is not None and len(self._cache) == self.n_blocks or self.workers <= 1 or self.n_blocks == 1:
            for index in range(self.n_blocks):
                yield index, self._block(index, device)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            pending = {i: pool.submit(self._block, i, device) for i in range(min(self.workers, self.n_blocks))}
            for index in range(self.n_blocks):
                block = pending.pop(index).result()
                ahead = index + self.workers
                if ahead < self.n_blocks:
                    pending[ahead] = pool.submit(self._block, ahead, device)
                yield index, block

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(flat.shape[0], self.k, device=flat.device, dtype=torch.float32)
        for index, block in self._blocks(flat.device):
            lo = index * self.block_rows
            out.addmm_(flat[:, lo:lo + self.block_rows].float(), block)
        return out

    def config(self) -> dict:
        config = {**super().config(), "block_rows": self.block_rows}
        if self.kind == "rademacher":  # signs from 32-bit words (not the earlier one-draw-per-entry)
            config["sign_generator"] = "words32"
        return config


class SJLTProjector(Projector):
    """Sparse JL: each input coordinate adds ±g_j/√c to c hashed output coordinates."""

    kind = "sjlt"

    def __init__(self, p: int, k: int, seed: int, nonzeros: int = DEFAULT_NONZEROS):
        super().__init__(p, k, seed)
        self.nonzeros = nonzeros
        generator = torch.Generator().manual_seed(seed)
        self.rows = torch.randint(0, k, (nonzeros, p), generator=generator)
        self.signs = (torch.randint(0, 2, (nonzeros, p), generator=generator).float() * 2 - 1) / math.sqrt(nonzeros)
        self._bags: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def bags(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P in CSR form on `device`: (row offsets, column per nonzero, value per nonzero).

        Output coordinate b sums sign·g_j over its bag of input coordinates j; colliding
        hashes of one coordinate are summed into one entry.
        """
        device = torch.device(device)
        if device not in self._bags:
            columns = torch.arange(self.p).repeat(self.nonzeros)
            indices = torch.stack([self.rows.reshape(-1), columns])
            coo = torch.sparse_coo_tensor(indices, self.signs.reshape(-1), (self.k, self.p),
                                          check_invariants=False).coalesce()
            rows, cols = coo.indices()
            offsets = torch.searchsorted(rows, torch.arange(self.k))
            self._bags[device] = (offsets.to(device), cols.contiguous().to(device), coo.values().to(device))
        return self._bags[device]

    def project_transposed(self, flat_t: torch.Tensor) -> torch.Tensor:
        """(n, k) sketches of gradients given as a contiguous (p, n) matrix.

        One `embedding_bag` over P's rows: each output coordinate gathers its input rows (n
        contiguous values each) and sums them with their signs — no p×k matrix, no scatter.
        """
        offsets, cols, values = self.bags(flat_t.device)
        out = F.embedding_bag(cols, flat_t.float(), offsets, mode="sum", per_sample_weights=values)
        return out.t().contiguous()

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        return self.project_transposed(flat.float().t().contiguous())

    def config(self) -> dict:
        return {**super().config(), "nonzeros": self.nonzeros}


# ----------------------------------------------------------------------------- kronecker


@dataclass(frozen=True)
class LayerSpec:
    """One parameterised module of a model, as the Kronecker projection sees it.

    kind "linear": gradient [∂W | ∂b] is (d_out, d_in) with d_in = in_features (+1 for
    the bias); kind "embedding": gradient ∂Wᵀ is (d_out = embedding_dim, d_in =
    num_embeddings); kind "exact": the parameters' gradients enter the second stage as they
    are (LayerNorm). k_in/k_out are the factor widths (equal to d_in/d_out when exact).
    """

    module: str
    kind: str
    params: tuple[str, ...]
    d_in: int
    d_out: int
    k_in: int
    k_out: int

    @property
    def width(self) -> int:
        """Number of stage-1 values this layer contributes."""
        return self.k_in * self.k_out


def kronecker_layout(model: nn.Module, factor_dim: int = DEFAULT_FACTOR_DIM) -> list[LayerSpec]:
    """Returns the per-module layout of `model` for the Kronecker projection.

    Raises ValueError naming every parameter that no supported module owns alone.
    """
    specs, owner, unsupported = [], {}, []
    for module_name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False))
        if not own:
            continue
        names = tuple(f"{module_name}.{n}" if module_name else n for n, _ in own)
        for (_, tensor), name in zip(own, names):
            if id(tensor) in owner:
                unsupported.append(f"{name} (shared with {owner[id(tensor)]})")
            owner[id(tensor)] = name
        local = dict(own)
        if isinstance(module, nn.Linear) and set(local) <= {"weight", "bias"} and "weight" in local:
            d_in = module.in_features + (1 if module.bias is not None else 0)
            specs.append(LayerSpec(module_name, "linear", names, d_in, module.out_features,
                                   _side(d_in, factor_dim), _side(module.out_features, factor_dim)))
        elif (isinstance(module, nn.Embedding) and set(local) == {"weight"} and module.max_norm is None
              and not module.sparse):
            specs.append(LayerSpec(module_name, "embedding", names, module.num_embeddings,
                                   module.embedding_dim, _side(module.num_embeddings, factor_dim),
                                   _side(module.embedding_dim, factor_dim)))
        elif isinstance(module, nn.LayerNorm) and set(local) <= {"weight", "bias"}:
            width = sum(t.numel() for _, t in own)
            specs.append(LayerSpec(module_name, "exact", names, width, 1, width, 1))
        else:
            unsupported.extend(f"{name} ({type(module).__name__})" for name in names)
    if unsupported:
        raise ValueError("the kronecker projection supports parameters of nn.Linear, nn.Embedding and "
                         "nn.LayerNorm, each owned by one module; not: " + ", ".join(unsupported)
                         + " — use projection 'sjlt'")
    return specs


def _side(width: int, factor_dim: int) -> int:
    return width if width <= factor_dim else factor_dim


class KroneckerProjector(Projector):
    """z = S · concat_l(P_out,l G_l P_in,lᵀ, exact parts); S a seeded SJLT to k dimensions.

    `project(flat)` applies the map to flat per-example gradients (parameter order
    `param_shapes`); `GradientSketcher` computes the same sketches from activations and
    output gradients without forming the flat gradients.
    """

    kind = "kronecker"

    def __init__(self, layout: Sequence[LayerSpec], param_shapes: dict[str, tuple[int, ...]], k: int,
                 seed: int, factor_dim: int = DEFAULT_FACTOR_DIM, nonzeros: int = DEFAULT_NONZEROS):
        p = sum(math.prod(s) for s in param_shapes.values())
        super().__init__(p, k, seed)
        self.layout, self.factor_dim, self.nonzeros = list(layout), factor_dim, nonzeros
        covered = [n for spec in self.layout for n in spec.params]
        if sorted(covered) != sorted(param_shapes):
            raise ValueError(f"layout covers {sorted(covered)}, the gradients have {sorted(param_shapes)}")
        self.offsets, lo = {}, 0
        for name, shape in param_shapes.items():
            self.offsets[name] = (lo, tuple(shape))
            lo += math.prod(shape)
        self.p_in, self.p_out = [], []
        for spec in self.layout:  # factor matrices, seeded by (seed, module name, side)
            self.p_in.append(_factor(seed, spec.module, "in", spec.d_in, spec.k_in) if spec.kind != "exact" else None)
            self.p_out.append(_factor(seed, spec.module, "out", spec.d_out, spec.k_out) if spec.kind != "exact" else None)
        self.width = sum(spec.width for spec in self.layout)
        self.stage2 = SJLTProjector(self.width, k, seed * 7919 + 17, nonzeros)
        self._device_factors: dict[torch.device, tuple[list, list]] = {}

    def factors(self, device: torch.device) -> tuple[list, list]:
        """(P_in, P_out) per layer on `device` (None for identity sides and exact layers)."""
        device = torch.device(device)
        if device not in self._device_factors:
            move = lambda ts: [None if t is None else t.to(device) for t in ts]  # noqa: E731
            self._device_factors[device] = (move(self.p_in), move(self.p_out))
        return self._device_factors[device]

    def _grad(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        lo, shape = self.offsets[name]
        return flat[:, lo:lo + math.prod(shape)].reshape(flat.shape[0], *shape)

    def stage1_from_flat(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, width) stage-1 values of (n, p) flat gradients (materialises each layer's G)."""
        n = flat.shape[0]
        p_in, p_out = self.factors(flat.device)
        parts = []
        for spec, pin, pout in zip(self.layout, p_in, p_out):
            grads = [self._grad(flat, name).float() for name in spec.params]
            if spec.kind == "exact":
                parts.append(torch.cat([g.reshape(n, -1) for g in grads], 1))
                continue
            if spec.kind == "linear":
                g = grads[0] if len(grads) == 1 else torch.cat([grads[0], grads[1][:, :, None]], 2)
            else:  # embedding: (V, E) weight gradient, seen as (E, V)
                g = grads[0].transpose(1, 2)
            if pout is not None:
                g = pout @ g
            if pin is not None:
                g = g @ pin.t()
            parts.append(g.reshape(n, -1))
        return torch.cat(parts, 1)

    def project(self, flat: torch.Tensor) -> torch.Tensor:
        return self.stage2.project(self.stage1_from_flat(flat))

    def config(self) -> dict:
        return {**super().config(), "factor_dim": self.factor_dim, "nonzeros": self.nonzeros,
                "stage1_width": self.width, "factor_distribution": "gaussian",
                "layers": [{"module": s.module, "kind": s.kind, "d_in": s.d_in, "d_out": s.d_out,
                            "k_in": s.k_in, "k_out": s.k_out} for s in self.layout]}


def _factor(seed: int, module: str, side: str, width: int, k_side: int) -> torch.Tensor | None:
    """(k_side, width) N(0, 1/k_side) factor, or None (identity) when the side is kept exact."""
    if k_side == width:
        return None
    generator = torch.Generator().manual_seed(
        (seed * 1_000_003 + zlib.crc32(f"{module}/{side}".encode())) % (2 ** 63))
    return torch.randn(k_side, width, generator=generator) / math.sqrt(k_side)


def make_projector(kind: str, p: int, k: int, seed: int, *, nonzeros: int = DEFAULT_NONZEROS,
                   layout: Sequence[LayerSpec] | None = None,
                   param_shapes: dict[str, tuple[int, ...]] | None = None,
                   factor_dim: int = DEFAULT_FACTOR_DIM) -> Projector:
    if kind in ("gaussian", "rademacher"):
        return DenseProjector(p, k, seed, kind=kind)
    if kind == "sjlt":
        return SJLTProjector(p, k, seed, nonzeros=nonzeros)
    if kind == "kronecker":
        if layout is None or param_shapes is None:
            raise ValueError("the kronecker projection needs the model's layer layout and parameter shapes "
                             "(GradientSketcher builds them)")
        projector = KroneckerProjector(layout, param_shapes, k, seed, factor_dim=factor_dim, nonzeros=nonzeros)
        if projector.p != p:
            raise ValueError(f"parameter shapes give p={projector.p}, expected {p}")
        return projector
    raise ValueError(f"unknown projection {kind!r}; choose one of {PROJECTIONS}")


# ----------------------------------------------------------------------------- sketcher


@dataclass
class Sketches:
    sketch: np.ndarray  # (n, k) float32 (values rounded to storage_dtype)
    grad_norm: np.ndarray  # (n,) L2 norm of the full per-example gradient
    loss: np.ndarray  # (n,) per-example loss at θ₀


def round_to_storage(sketch: torch.Tensor, storage_dtype: str) -> torch.Tensor:
    """Rounds float32 values to `storage_dtype`'s precision; returns float32."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage_dtype {storage_dtype!r}; choose one of {sorted(STORAGE_DTYPES)}")
    return sketch.float().to(STORAGE_DTYPES[storage_dtype]).float()


class GradientSketcher:
    """Computes per-example gradient sketches of a workload's model at fixed parameters.

    Keyword options (all recorded by `config`): `storage_dtype` rounds the stored sketches;
    `nonzeros` (SJLT and the Kronecker second stage) and `factor_dim` (Kronecker factor
    width) shape the projection; `dense_buffer_bytes` bounds the flat gradients buffered
    for an uncached dense projection.
    """

    def __init__(self, workload: Workload, params: Params, projector_kind: str, k: int,
                 seed: int, chunk_size: int = 64, *, storage_dtype: str = "float32",
                 nonzeros: int = DEFAULT_NONZEROS, factor_dim: int = DEFAULT_FACTOR_DIM,
                 dense_buffer_bytes: int = 1 << 30):
        round_to_storage(torch.zeros(1), storage_dtype)  # validates the name
        self.workload = workload
        self.model = workload.build_model(0)
        self.params = {n: p.detach().to(workload.device) for n, p in params.items()}
        self.names = list(self.params)
        self.chunk_size = chunk_size
        self.storage_dtype = storage_dtype
        self.dense_buffer_bytes = dense_buffer_bytes
        self._buffer: torch.Tensor | None = None
        self._buffer_key: tuple | None = None
        p = sum(t.numel() for t in self.params.values())
        if projector_kind == "kronecker":
            layout = kronecker_layout(self.model, factor_dim)
            shapes = {n: tuple(t.shape) for n, t in self.params.items()}
            self.projector = make_projector("kronecker", p, k, seed, nonzeros=nonzeros, layout=layout,
                                            param_shapes=shapes, factor_dim=factor_dim)
            self._modules = dict(self.model.named_modules())
            self._grad_params = {n: t.clone().requires_grad_(True) for n, t in self.params.items()}
            self._shared: set[int] | None = None  # probed on the first real chunk (any modality)
        else:
            self.projector = make_projector(projector_kind, p, k, seed, nonzeros=nonzeros)

        def example_loss(params: Params, example: torch.Tensor) -> torch.Tensor:
            return workload.example_losses(_Bound(self.model, params), example.unsqueeze(0))[0]

        def loss_and_grad(params: Params, example: torch.Tensor):
            return example_loss(params, example), grad(example_loss)(params, example)

        self._per_example = vmap(loss_and_grad, in_dims=(None, 0))

    @classmethod
    def from_config(cls, workload: Workload, params: Params, config: str | dict, chunk_size: int = 64,
                    **overrides) -> "GradientSketcher":
        """Rebuilds the sketcher whose `config()` is `config` (same projection, same space)."""
        config = json.loads(config) if isinstance(config, str) else config
        options = {key: config[key] for key in ("nonzeros", "factor_dim", "storage_dtype") if key in config}
        return cls(workload, params, config["projection"], config["k"], config["seed"], chunk_size,
                   **{**options, **overrides})

    def config(self, model_version: str) -> str:
        """Returns the JSON sketch_config recorded with every sketch row."""
        return json.dumps({**self.projector.config(), **self.workload.config(),
                           "storage_dtype": self.storage_dtype, "model_version": model_version},
                          sort_keys=True)

    # -- flat per-example gradients (vmap) ------------------------------------------------

    def _flat_grads(self, chunk: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        losses, grads = self._per_example(self.params, chunk)
        parts = [grads[n].detach().reshape(chunk.shape[0], -1) for n in self.names]
        flat = torch.cat(parts, dim=1, out=out) if out is not None else torch.cat(parts, dim=1)
        return losses.detach(), flat

    def _transposed_grads(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses, (p, n) gradients, (n,) norms): grads written transposed into a reused buffer.

        Norms are taken from the row-major parts (a reduction over dim 0 of the (p, n) buffer
        is ~25× slower on CPU).
        """
        losses, grads = self._per_example(self.params, chunk)
        n = chunk.shape[0]
        key = (n, chunk.device)
        if self._buffer_key != key:
            self._buffer = torch.empty(self.projector.p, n, device=chunk.device)
            self._buffer_key = key
        lo = 0
        norm_sq = torch.zeros(n, device=chunk.device)
        for name in self.names:
            part = grads[name].detach().reshape(n, -1)
            self._buffer[lo:lo + part.shape[1]].copy_(part.t())
            norm_sq += torch.linalg.vector_norm(part, dim=1) ** 2
            lo += part.shape[1]
        return losses.detach(), self._buffer, norm_sq.sqrt()

    def _dense_buffer_rows(self) -> int:
        """Examples whose flat gradients are projected together (1 chunk when P is cached)."""
        projector = self.projector
        if not isinstance(projector, DenseProjector) or projector.fully_cached:
            return self.chunk_size
        rows = max(self.chunk_size, self.dense_buffer_bytes // (4 * projector.p))
        return max(self.chunk_size, rows // self.chunk_size * self.chunk_size)

    def _flat_sketches(self, inputs: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yields (sketch, grad_norm, loss) for consecutive slices of `inputs`."""
        if isinstance(self.projector, SJLTProjector):
            for lo in range(0, inputs.shape[0], self.chunk_size):
                loss, flat_t, norm = self._transposed_grads(inputs[lo:lo + self.chunk_size])
                yield self.projector.project_transposed(flat_t), norm, loss
            return
        rows = self._dense_buffer_rows()
        for lo in range(0, inputs.shape[0], rows):
            block = inputs[lo:lo + rows]
            if rows == self.chunk_size:
                loss, flat = self._flat_grads(block)
            else:  # buffered: chunks write into one buffer, projected with blocks outer
                flat = torch.empty(block.shape[0], self.projector.p, device=block.device)
                losses = []
                for c in range(0, block.shape[0], self.chunk_size):
                    losses.append(self._flat_grads(block[c:c + self.chunk_size],
                                                   out=flat[c:c + self.chunk_size])[0])
                loss = torch.cat(losses)
            yield self.projector.project(flat), flat.norm(dim=1), loss
            del flat

    # -- kronecker: activations and output gradients --------------------------------------

    def _kronecker_sketches(self, inputs: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for lo in range(0, inputs.shape[0], self.chunk_size):
            stage1, norm_sq, loss = self._kronecker_stage1(inputs[lo:lo + self.chunk_size])
            yield self.projector.stage2.project(stage1), norm_sq.sqrt(), loss

    def _hooked_losses(self, chunk: torch.Tensor, params: Params, shared: set[int],
                       records: list | None = None) -> torch.Tensor:
        """Per-example losses of a forward that records (layer, input, output) per layer call.

        Layers in `shared` run once for the whole batch (e.g. position embeddings of
        `arange(L)`): their output is expanded to the batch so each example gets its own δ.
        """
        projector: KroneckerProjector = self.projector  # type: ignore[assignment]
        n = chunk.shape[0]
        handles = []
        for index, spec in enumerate(projector.layout):
            def hook(module, args, output, index=index):
                x = args[0]
                if index in shared:
                    x, output = x.expand(n, *x.shape), output.expand(n, *output.shape)
                if records is not None:
                    records.append((index, x, output))
                return output
            handles.append(self._modules[spec.module].register_forward_hook(hook))
        try:
            return self.workload.example_losses(_Bound(self.model, params), chunk)
        finally:
            for handle in handles:
                handle.remove()

    def _probe_shared_modules(self, examples: torch.Tensor) -> set[int]:
        """Indices of layers whose input does not carry the batch dimension.

        Found by running two tiny batches (1 and 2 of the workload's own encoded examples)
        and seeing which layer inputs change their leading size; the expansion is then
        checked to leave the losses as they are, so a model it would change is refused
        instead of sketched wrongly.
        """
        probe = examples[:2] if examples.shape[0] >= 2 else examples[:1].repeat(2, *[1] * (examples.dim() - 1))
        leading: list[dict[int, int]] = []
        with torch.no_grad():
            for batch in (probe[:1], probe):
                records: list = []
                self._hooked_losses(batch, self.params, set(), records)
                leading.append({index: x.shape[0] if x.dim() else 0 for index, x, _ in records})
            shared = {index for index in leading[1] if leading[0].get(index) == leading[1][index]}
            if shared:
                plain = self.workload.example_losses(_Bound(self.model, self.params), probe)
                expanded = self._hooked_losses(probe, self.params, shared)
                if expanded.shape != plain.shape or not torch.allclose(expanded, plain, rtol=1e-5, atol=1e-6):
                    names = [self.projector.layout[i].module for i in sorted(shared)]  # type: ignore[attr-defined]
                    raise ValueError(f"modules {names} run once for the whole batch and cannot be expanded per "
                                     "example; use projection 'sjlt'")
        return shared

    def _kronecker_stage1(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, width) stage-1 values, (n,) squared gradient norms and (n,) losses of a chunk."""
        projector: KroneckerProjector = self.projector  # type: ignore[assignment]
        n = chunk.shape[0]
        if self._shared is None:
            self._shared = self._probe_shared_modules(chunk)
        records: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        with torch.enable_grad():
            losses = self._hooked_losses(chunk, self._grad_params, self._shared, records)
            # examples do not interact, so one backward of the sum gives each example's δ
            deltas = torch.autograd.grad(losses.sum(), [r[2] for r in records], allow_unused=True)
        p_in, p_out = projector.factors(chunk.device)
        offsets = np.cumsum([0] + [spec.width for spec in projector.layout])
        stage1 = torch.zeros(n, projector.width, device=chunk.device)
        norm_sq = torch.zeros(n, device=chunk.device)
        grams: dict[int, list] = {}  # layers called more than once: norms need the summed G
        for (index, x, output), delta in zip(records, deltas):
            if delta is None:
                continue
            spec = projector.layout[index]
            block, sq = _layer_sketch(spec, self._modules[spec.module], x.detach(), delta.detach(),
                                      p_in[index], p_out[index])
            stage1[:, offsets[index]:offsets[index + 1]] += block
            grams.setdefault(index, []).append(sq)
        for index, parts in grams.items():
            if len(parts) > 1:
                raise NotImplementedError(f"module {projector.layout[index].module} is called more than once per "
                                          "forward; the kronecker projection needs single-use modules (use sjlt)")
            norm_sq += parts[0]
        return stage1, norm_sq, losses.detach()

    # -- public API ------------------------------------------------------------------------

    def _sketches(self, inputs: torch.Tensor):
        if isinstance(self.projector, KroneckerProjector):
            return self._kronecker_sketches(inputs)
        return self._flat_sketches(inputs)

    def sketch_examples(self, inputs: torch.Tensor, storage_dtype: str | None = None) -> Sketches:
        """Returns the sketches of every row of `inputs`, computed chunk by chunk.

        `storage_dtype` (default: the sketcher's) rounds the sketches to float16/bfloat16.
        """
        storage_dtype = storage_dtype or self.storage_dtype
        n = inputs.shape[0]
        # results go into arrays allocated once: small per-chunk tensors kept alive between the
        # chunks' large transient ones fragment the heap, and RSS would then grow with the pool
        sketch = torch.empty(n, self.projector.k)
        grad_norm, loss = torch.empty(n), torch.empty(n)
        lo = 0
        for part, norm, part_loss in self._sketches(inputs):
            hi = lo + part.shape[0]
            sketch[lo:hi] = round_to_storage(part, storage_dtype)
            grad_norm[lo:hi], loss[lo:hi] = norm, part_loss
            lo = hi
        return Sketches(sketch.numpy(), grad_norm.numpy(), loss.numpy())

    def sketch_mean_gradient(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        """Returns (q, loss): the sketch of ∇θ of the mean loss over `inputs`, and that loss."""
        if isinstance(self.projector, KroneckerProjector):
            total, loss_sum = torch.zeros(self.projector.k), 0.0
            for sketch, _, loss in self._kronecker_sketches(inputs):
                total += sketch.sum(0).cpu()
                loss_sum += float(loss.sum())
            return (total / inputs.shape[0]).numpy(), loss_sum / inputs.shape[0]
        total = None
        loss_sum = 0.0
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat = self._flat_grads(inputs[lo:lo + self.chunk_size])
            part = flat.sum(0, keepdim=True)
            total = part if total is None else total + part
            loss_sum += float(loss.sum())
        # P is linear, so projecting the mean gradient equals the mean of the sketches
        return self.projector.project(total / inputs.shape[0])[0].cpu().numpy(), loss_sum / inputs.shape[0]


def _layer_sketch(spec: LayerSpec, module: nn.Module, x: torch.Tensor, delta: torch.Tensor,
                  p_in: torch.Tensor | None, p_out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, k_out·k_in) sketch block and (n,) squared gradient norm of one layer call."""
    n = delta.shape[0]
    if spec.kind == "exact":  # LayerNorm: ∂w = Σ_t δ_t ⊙ x̂_t, ∂b = Σ_t δ_t
        shape = module.normalized_shape
        parts = []
        if module.weight is not None:
            x_hat = F.layer_norm(x, shape, None, None, module.eps)
            parts.append((delta * x_hat).reshape(n, -1, math.prod(shape)).sum(1))
        if module.bias is not None:
            parts.append(delta.reshape(n, -1, math.prod(shape)).sum(1))
        block = torch.cat(parts, 1)
        return block, (block ** 2).sum(1)
    delta = delta.reshape(n, -1, spec.d_out).float()  # (n, T, d_out)
    tokens = delta.shape[1]
    d = delta if p_out is None else delta @ p_out.t()  # (n, T, k_out)
    if spec.kind == "linear":
        a = x.reshape(n, -1, x.shape[-1]).float()  # (n, T, in_features)
        bias = spec.d_in > a.shape[-1]
        if p_in is None:
            a_proj = torch.cat([a, a.new_ones(n, tokens, 1)], 2) if bias else a
        else:
            a_proj = a @ p_in[:, :a.shape[-1]].t()
            if bias:
                a_proj = a_proj + p_in[:, -1]
        block = d.transpose(1, 2) @ a_proj  # (n, k_out, k_in) = Σ_t (P_out δ_t)(P_in [a_t; 1])ᵀ
        # exact ‖[∂W | ∂b]‖², by the cheaper of materialising ∂W or the token Gram matrices
        if tokens * (spec.d_in + spec.d_out) < spec.d_in * spec.d_out:
            gram_a = a @ a.transpose(1, 2)
            if bias:
                gram_a = gram_a + 1
            sq = ((delta @ delta.transpose(1, 2)) * gram_a).sum((1, 2))
        else:
            g = delta.transpose(1, 2) @ a
            sq = (g ** 2).sum((1, 2)) + ((delta.sum(1) ** 2).sum(1) if bias else 0)
        return block.reshape(n, -1), sq
    # embedding: a_t is the one-hot of id_t, so P_in a_t is column id_t of P_in
    ids = x.reshape(n, -1)
    if module.padding_idx is not None:  # the padding row gets no gradient
        delta = delta * (ids != module.padding_idx).unsqueeze(-1)
        d = delta if p_out is None else delta @ p_out.t()
    if p_in is None:
        a_proj = F.one_hot(ids, spec.d_in).float()
    else:
        a_proj = p_in.t()[ids]  # (n, T, k_in)
    block = d.transpose(1, 2) @ a_proj
    if tokens * tokens < spec.d_in:  # Gram over positions that share an id
        same = (ids[:, :, None] == ids[:, None, :]).float()
        sq = ((delta @ delta.transpose(1, 2)) * same).sum((1, 2))
    else:
        g = torch.zeros(n, spec.d_in, spec.d_out, device=delta.device)
        g.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, spec.d_out), delta)
        sq = (g ** 2).sum((1, 2))
    return block.reshape(n, -1), sq


class _Bound(torch.nn.Module):
    """Calls a module with an explicit parameter dict (functional_call behind a Module face)."""

    def __init__(self, model: torch.nn.Module, params: Params):
        super().__init__()
        self._model, self._params = [model], params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model[0], self._params, (x,))


class CheckpointSketcher:
    """Sketches gradients at several checkpoints of one training run and concatenates them.

    The sketch of example i is [P g_i(θ_{s₁}); …; P g_i(θ_{s_C})] (length C·k), the same
    projection P at every checkpoint, so ⟨q_t, z_i⟩ sums the per-checkpoint alignments as
    TracIn-CP does and ‖Z_S‖² sums the per-checkpoint penalties. One checkpoint gives
    exactly `GradientSketcher`'s sketches. `grad_norm` is the norm of the concatenated
    gradients; `loss` is the loss at the last checkpoint.
    """

    def __init__(self, sketchers: Sequence[GradientSketcher], steps: Sequence[int]):
        if not sketchers or len(sketchers) != len(steps):
            raise ValueError(f"need one sketcher per checkpoint step, got {len(sketchers)} for steps {list(steps)}")
        self.sketchers = list(sketchers)
        self.steps = [int(s) for s in steps]
        self.storage_dtype = self.sketchers[0].storage_dtype

    @classmethod
    def build(cls, workload: Workload, checkpoints: Sequence[tuple[int, Params]], projector_kind: str, k: int,
              seed: int, chunk_size: int = 64, **options) -> "CheckpointSketcher":
        """`checkpoints` is [(step, parameters)] in training order."""
        return cls([GradientSketcher(workload, params, projector_kind, k, seed, chunk_size, **options)
                    for _, params in checkpoints], [step for step, _ in checkpoints])

    @classmethod
    def from_config(cls, workload: Workload, checkpoints: Sequence[tuple[int, Params]], config: str | dict,
                    chunk_size: int = 64) -> "CheckpointSketcher":
        """Rebuilds the sketcher whose `config()` is `config`; the checkpoint steps must match."""
        config = json.loads(config) if isinstance(config, str) else config
        steps = [step for step, _ in checkpoints]
        recorded = config.get("checkpoint_steps", steps)
        if list(recorded) != steps:
            raise ValueError(f"the sketches were taken at checkpoint steps {recorded}, the reference model now has "
                             f"{steps}; rematerialise gradient_sketches")
        return cls([GradientSketcher.from_config(workload, params, config, chunk_size) for _, params in checkpoints],
                   steps)

    @property
    def dim(self) -> int:
        return len(self.sketchers) * self.sketchers[0].projector.k

    def config(self, model_version: str) -> str:
        config = json.loads(self.sketchers[0].config(model_version))
        return json.dumps({**config, "checkpoint_steps": self.steps, "dim": self.dim}, sort_keys=True)

    def sketch_examples(self, inputs: torch.Tensor) -> Sketches:
        parts = [sketcher.sketch_examples(inputs) for sketcher in self.sketchers]
        return Sketches(np.concatenate([p.sketch for p in parts], axis=1),
                        np.sqrt(sum(p.grad_norm.astype(np.float64) ** 2 for p in parts)),
                        parts[-1].loss)

    def sketch_mean_gradient(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        parts = [sketcher.sketch_mean_gradient(inputs) for sketcher in self.sketchers]
        return np.concatenate([q for q, _ in parts]), parts[-1][1]

"""Sketchers: per-example gradient sketches of a workload's model at one or several checkpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from .. import progress
from ..workloads.base import Params, Workload
from .kronecker import KroneckerProjector, LayerSpec, kronecker_layout, layer_sketch
from .projectors import (DEFAULT_FACTOR_DIM, DEFAULT_NONZEROS, PROJECTIONS, DenseProjector, Projector,
                         SJLTProjector)


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
            block, sq = layer_sketch(spec, self._modules[spec.module], x.detach(), delta.detach(),
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
        with progress.task("examples", total=n, unit="example") as done:
            for part, norm, part_loss in self._sketches(inputs):
                hi = lo + part.shape[0]
                sketch[lo:hi] = round_to_storage(part, storage_dtype)
                grad_norm[lo:hi], loss[lo:hi] = norm, part_loss
                lo = hi
                done.advance(part.shape[0])
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

"""Per-example gradient strategies: how chunks of examples become the input a projector consumes.

The TRAK split (its gradient_computers.py next to projectors.py): computing per-example
gradients is kept apart from projecting them, and the projector is handed in. Each strategy
serves one `Projector.consumes` declaration, and `gradient_strategy` picks it from that
declaration alone:

- `FlatGradients` (`FLAT`): per-example gradients from `torch.func.vmap(grad(loss))` over a
  chunk of examples (the chunk size bounds memory), concatenated to (n, p) and projected.
- `BufferedFlatGradients` (`FLAT_BUFFERED`): the flat gradients of several chunks are
  written into one buffer (`buffer_bytes`) and projected together, so an uncached dense
  matrix is generated once per buffer instead of once per chunk. Memory is bounded by the
  buffer, not by the pool.
- `TransposedGradients` (`FLAT_TRANSPOSED`): the vmapped gradients are written parameter by
  parameter, transposed, into a reused (p, n) buffer (no flat (n, p) copy).
- `KroneckerGradients` (`LAYER_IO`): forward hooks on one batched `functional_call` capture
  each layer's inputs and outputs; the per-example losses are independent, so one backward
  of their sum yields every example's output gradients δ, from which `layer_sketch`
  (kronecker.py) forms the stage-1 values and exact gradient norms.

Every strategy yields (sketch, grad_norm, loss) per slice of the inputs and computes the
sketch of a mean gradient; `PerExampleGradients` is the model at fixed parameters they share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from ..workloads.base import Params, Workload
from .kronecker import KroneckerProjector, layer_sketch, tied_embedding_sketch
from .projectors import FLAT, FLAT_BUFFERED, FLAT_TRANSPOSED, LAYER_IO, Projector

Slices = Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # (sketch, grad_norm, loss) per slice


class Bound(torch.nn.Module):
    """Calls a module with an explicit parameter dict (functional_call behind a Module face)."""

    def __init__(self, model: torch.nn.Module, params: Params):
        super().__init__()
        self._model, self._params = [model], params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model[0], self._params, (x,))


class PerExampleGradients:
    """A workload's model at fixed parameters, and its per-example losses and gradients by vmap(grad).

    Gradients are taken with respect to `params` only; `frozen` (the parameters not
    sketched) enter the forward as constants, so they cost no gradient memory or time.
    """

    def __init__(self, workload: Workload, model: torch.nn.Module, params: Params, frozen: Params | None = None):
        self.workload, self.model, self.params = workload, model, params
        self.frozen = dict(frozen or {})
        self.names = list(params)

        def example_loss(params: Params, example: torch.Tensor) -> torch.Tensor:
            return workload.example_losses(self.bound(params), example.unsqueeze(0))[0]

        def loss_and_grad(params: Params, example: torch.Tensor):
            return example_loss(params, example), grad(example_loss)(params, example)

        self._per_example = vmap(loss_and_grad, in_dims=(None, 0))

    def bound(self, params: Params) -> Bound:
        """The model called with `params` and the frozen parameters."""
        return Bound(self.model, {**self.frozen, **params})

    def __call__(self, chunk: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(n,) losses and {parameter name: (n, *shape) gradients} of a chunk."""
        return self._per_example(self.params, chunk)

    def flat(self, chunk: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(n,) losses and (n, p) flat gradients (parameter order), written into `out` if given."""
        losses, grads = self(chunk)
        parts = [grads[n].detach().reshape(chunk.shape[0], -1) for n in self.names]
        flat = torch.cat(parts, dim=1, out=out) if out is not None else torch.cat(parts, dim=1)
        return losses.detach(), flat


class GradientStrategy(ABC):
    """Feeds a projector the per-example gradient input it consumes, chunk by chunk."""

    def __init__(self, projector: Projector, source: PerExampleGradients, chunk_size: int, buffer_bytes: int):
        self.projector, self.source = projector, source
        self.chunk_size, self.buffer_bytes = chunk_size, buffer_bytes

    @property
    def rows(self) -> int:
        """Examples projected together."""
        return self.chunk_size

    @abstractmethod
    def sketches(self, inputs: torch.Tensor) -> Slices:
        """Yields (sketch, grad_norm, loss) for consecutive slices of `inputs`."""

    @abstractmethod
    def mean_sketch(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        """(q, loss): the sketch of ∇θ of the mean loss over `inputs`, and that loss."""


class FlatGradients(GradientStrategy):
    """(n, p) flat gradients of one chunk at a time, given to `projector.project`."""

    def sketches(self, inputs: torch.Tensor) -> Slices:
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat = self.source.flat(inputs[lo:lo + self.chunk_size])
            yield self.projector.project(flat), flat.norm(dim=1), loss
            del flat

    def mean_sketch(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        total = None
        loss_sum = 0.0
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat = self.source.flat(inputs[lo:lo + self.chunk_size])
            part = flat.sum(0, keepdim=True)
            total = part if total is None else total + part
            loss_sum += float(loss.sum())
        # P is linear, so projecting the mean gradient equals the mean of the sketches
        return self.projector.project(total / inputs.shape[0])[0].cpu().numpy(), loss_sum / inputs.shape[0]


class BufferedFlatGradients(FlatGradients):
    """Flat gradients of as many whole chunks as `buffer_bytes` holds, projected in one call."""

    @property
    def rows(self) -> int:
        rows = max(self.chunk_size, self.buffer_bytes // (4 * self.projector.p))
        return max(self.chunk_size, rows // self.chunk_size * self.chunk_size)

    def sketches(self, inputs: torch.Tensor) -> Slices:
        rows = self.rows
        if rows == self.chunk_size:  # the budget holds one chunk: nothing to buffer
            yield from super().sketches(inputs)
            return
        for lo in range(0, inputs.shape[0], rows):
            block = inputs[lo:lo + rows]
            flat = torch.empty(block.shape[0], self.projector.p, device=block.device)
            losses = []
            for c in range(0, block.shape[0], self.chunk_size):
                losses.append(self.source.flat(block[c:c + self.chunk_size], out=flat[c:c + self.chunk_size])[0])
            yield self.projector.project(flat), flat.norm(dim=1), torch.cat(losses)
            del flat


class TransposedGradients(FlatGradients):
    """(p, n) gradients in a reused buffer, given to `projector.project_transposed`."""

    def __init__(self, projector: Projector, source: PerExampleGradients, chunk_size: int, buffer_bytes: int):
        super().__init__(projector, source, chunk_size, buffer_bytes)
        self._buffer: torch.Tensor | None = None
        self._buffer_key: tuple | None = None

    def sketches(self, inputs: torch.Tensor) -> Slices:
        for lo in range(0, inputs.shape[0], self.chunk_size):
            loss, flat_t, norm = self.transposed(inputs[lo:lo + self.chunk_size])
            yield self.projector.project_transposed(flat_t), norm, loss

    def transposed(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses, (p, n) gradients, (n,) norms); the gradients live in the reused buffer.

        Norms are taken from the row-major parts (a reduction over dim 0 of the (p, n) buffer
        is ~25× slower on CPU).
        """
        losses, grads = self.source(chunk)
        n = chunk.shape[0]
        key = (n, chunk.device)
        if self._buffer_key != key:
            self._buffer = torch.empty(self.projector.p, n, device=chunk.device)
            self._buffer_key = key
        lo = 0
        norm_sq = torch.zeros(n, device=chunk.device)
        for name in self.source.names:
            part = grads[name].detach().reshape(n, -1)
            self._buffer[lo:lo + part.shape[1]].copy_(part.t())
            norm_sq += torch.linalg.vector_norm(part, dim=1) ** 2
            lo += part.shape[1]
        return losses.detach(), self._buffer, norm_sq.sqrt()


class KroneckerGradients(GradientStrategy):
    """Layer inputs and output gradients from hooks → stage-1 values → `projector.project_stage1`."""

    projector: KroneckerProjector

    def __init__(self, projector: Projector, source: PerExampleGradients, chunk_size: int, buffer_bytes: int):
        super().__init__(projector, source, chunk_size, buffer_bytes)
        self._modules = dict(source.model.named_modules())
        self._grad_params = {n: t.clone().requires_grad_(True) for n, t in source.params.items()}
        self._shared: set[tuple[int, str]] | None = None  # probed on the first real chunk (any modality)

    def sketches(self, inputs: torch.Tensor) -> Slices:
        for lo in range(0, inputs.shape[0], self.chunk_size):
            stage1, norm_sq, loss = self.stage1(inputs[lo:lo + self.chunk_size])
            yield self.projector.project_stage1(stage1), norm_sq.sqrt(), loss

    def mean_sketch(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        total, loss_sum = torch.zeros(self.projector.k), 0.0
        for sketch, _, loss in self.sketches(inputs):
            total += sketch.sum(0).cpu()
            loss_sum += float(loss.sum())
        return (total / inputs.shape[0]).numpy(), loss_sum / inputs.shape[0]

    def _losses(self, chunk: torch.Tensor, params: Params) -> torch.Tensor:
        return self.source.workload.example_losses(self.source.bound(params), chunk)

    def _hooked_losses(self, chunk: torch.Tensor, params: Params, shared: set[tuple[int, str]],
                       records: list | None = None) -> torch.Tensor:
        """Per-example losses of a forward that records (layer, use, input, output) per layer call.

        A layer's use is "own", or "tied" for the output layer that shares an embedding's
        weight. Uses in `shared` run once for the whole batch (e.g. position embeddings of
        `arange(L)`): their output is expanded to the batch so each example gets its own δ.
        """
        n = chunk.shape[0]
        handles = []
        for index, spec in enumerate(self.projector.layout):
            for use, module_name in [("own", spec.module)] + ([("tied", spec.tied)] if spec.tied else []):
                def hook(module, args, output, key=(index, use)):
                    x = args[0]
                    if key in shared:
                        x, output = _per_example(x, n), _per_example(output, n)
                    if records is not None:
                        records.append((*key, x, output))
                    return output
                handles.append(self._modules[module_name].register_forward_hook(hook))
        try:
            return self._losses(chunk, params)
        finally:
            for handle in handles:
                handle.remove()

    def _probe_shared_modules(self, examples: torch.Tensor) -> set[tuple[int, str]]:
        """(layer index, use) of the layer calls whose input does not carry the batch dimension.

        Found by running two tiny batches (1 and 2 of the workload's own encoded examples)
        and seeing which layer inputs change their leading size; the expansion is then
        checked to leave the losses as they are, so a model it would change is refused
        instead of sketched wrongly.
        """
        params = self.source.params
        probe = examples[:2] if examples.shape[0] >= 2 else examples[:1].repeat(2, *[1] * (examples.dim() - 1))
        leading: list[dict[int, int]] = []
        with torch.no_grad():
            for batch in (probe[:1], probe):
                records: list = []
                self._hooked_losses(batch, params, set(), records)
                leading.append({(index, use): x.shape[0] if x.dim() else 0 for index, use, x, _ in records})
            shared = {index for index in leading[1] if leading[0].get(index) == leading[1][index]}
            if shared:
                plain = self._losses(probe, params)
                expanded = self._hooked_losses(probe, params, shared)
                if expanded.shape != plain.shape or not torch.allclose(expanded, plain, rtol=1e-5, atol=1e-6):
                    names = [self.projector.layout[i].module for i, _ in sorted(shared)]
                    raise ValueError(f"modules {names} run once for the whole batch and cannot be expanded per "
                                     "example; use projection 'sjlt'")
        return shared

    def stage1(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, width) stage-1 values, (n,) squared gradient norms and (n,) losses of a chunk."""
        projector = self.projector
        if self._shared is None:
            self._shared = self._probe_shared_modules(chunk)
        records: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []
        with torch.enable_grad():
            losses = self._hooked_losses(chunk, self._grad_params, self._shared, records)
            # examples do not interact, so one backward of the sum gives each example's δ
            deltas = torch.autograd.grad(losses.sum(), [r[3] for r in records], allow_unused=True)
        p_in, p_out = projector.factors(chunk.device)
        offsets = np.cumsum([0] + [spec.width for spec in projector.layout])
        stage1 = torch.zeros(chunk.shape[0], projector.width, device=chunk.device)
        norm_sq = torch.zeros(chunk.shape[0], device=chunk.device)
        calls: dict[int, dict[str, list]] = {}  # a layer called twice: its norm would need the summed G
        for (index, use, x, _), delta in zip(records, deltas):
            if delta is not None:
                calls.setdefault(index, {}).setdefault(use, []).append((x.detach(), delta.detach()))
        for index, uses in calls.items():
            spec = projector.layout[index]
            if any(len(c) > 1 for c in uses.values()):
                raise NotImplementedError(f"module {spec.module} is called more than once per forward; the "
                                          "kronecker projection needs single-use modules (use sjlt)")
            module = self._modules[spec.module]
            if "tied" in uses and "own" in uses:
                block, sq = tied_embedding_sketch(spec, module, *uses["own"][0], *uses["tied"][0],
                                                  p_in[index], p_out[index])
            elif "tied" in uses:  # only the output use reached the loss: a bias-free Linear, transposed
                hidden, head_delta = uses["tied"][0]
                block, sq = tied_embedding_sketch(spec, module, hidden.new_zeros(hidden.shape[:-1], dtype=torch.long),
                                                  hidden.new_zeros(hidden.shape), hidden, head_delta,
                                                  p_in[index], p_out[index])
            else:
                block, sq = layer_sketch(spec, module, *uses["own"][0], p_in[index], p_out[index])
            stage1[:, offsets[index]:offsets[index + 1]] += block
            norm_sq += sq
        return stage1, norm_sq, losses.detach()


def _per_example(tensor: torch.Tensor, n: int) -> torch.Tensor:
    """A batch-wide tensor as n per-example views: a leading size-1 batch axis (GPT-2's
    position ids (1, T)) is expanded, otherwise one is prepended (`arange(L)`)."""
    if tensor.dim() > 1 and tensor.shape[0] == 1:
        return tensor.expand(n, *tensor.shape[1:])
    return tensor.expand(n, *tensor.shape)


STRATEGIES: dict[str, type[GradientStrategy]] = {FLAT: FlatGradients, FLAT_BUFFERED: BufferedFlatGradients,
                                                 FLAT_TRANSPOSED: TransposedGradients, LAYER_IO: KroneckerGradients}


def gradient_strategy(projector: Projector, source: PerExampleGradients, chunk_size: int,
                      buffer_bytes: int) -> GradientStrategy:
    """The strategy that feeds `projector` what it declares it consumes."""
    if projector.consumes not in STRATEGIES:
        raise ValueError(f"no gradient strategy for a projector that consumes {projector.consumes!r}; "
                         f"known: {sorted(STRATEGIES)}")
    return STRATEGIES[projector.consumes](projector, source, chunk_size, buffer_bytes)

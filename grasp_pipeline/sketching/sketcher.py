"""Sketchers: per-example gradient sketches of a workload's model at one or several checkpoints.

`GradientSketcher` holds the model at one set of parameters, a projector and the gradient
strategy (gradients.py) that feeds the projector what it declares it consumes, chosen once
from that declaration; it writes results into arrays allocated once and records the
`config()` JSON that rebuilds it. `CheckpointSketcher` concatenates the sketches of several
checkpoints, all through one shared projector.

`storage_dtype` ("float16" or "bfloat16") rounds sketches to that precision while keeping
float32 arrays: a Delta `list[float32]` column of rounded values compresses to the size of
16-bit storage, and readers need no change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..infra import progress
from ..workloads.base import Params, Workload
from .factory import projector_for
from .gradients import GradientStrategy, PerExampleGradients, gradient_strategy
from .projectors import DEFAULT_FACTOR_DIM, DEFAULT_NONZEROS, Projector

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def sketched_parameters(workload: Workload, model: torch.nn.Module, params: Params) -> list[str]:
    """The names of the parameters whose gradients are sketched: the workload's choice
    (`sketch_parameters(model)`, optional; None = all) or every name in `params`."""
    choose = getattr(workload, "sketch_parameters", None)
    chosen = choose(model) if choose is not None else None
    if chosen is None:
        return list(params)
    missing = [n for n in chosen if n not in params]
    if missing:
        raise ValueError(f"the workload chose parameters {missing} that the checkpoint does not have")
    return list(chosen)


def _check_projector(projector: Projector, kind: str, k: int, seed: int, p: int) -> None:
    """A handed-in projector must be the one the arguments describe (its config is recorded)."""
    want, have = (kind, k, seed, p), (projector.kind, projector.k, projector.seed, projector.p)
    if want != have:
        raise ValueError(f"the projector is (kind, k, seed, p) = {have}, the sketcher was asked for {want}")


class GradientSketcher:
    """Computes per-example gradient sketches of a workload's model at fixed parameters.

    Keyword options (all recorded by `config`): `storage_dtype` rounds the stored sketches;
    `nonzeros` (SJLT and the Kronecker second stage) and `factor_dim` (Kronecker factor
    width) shape the projection; `dense_buffer_bytes` bounds the flat gradients buffered
    for an uncached dense projection. `projector` hands in a ready projector (e.g. one shared
    across checkpoints) instead of building one; it must match kind, k, seed and the
    parameters' size, and then carries its own `nonzeros`/`factor_dim`.
    """

    def __init__(self, workload: Workload, params: Params, projector_kind: str, k: int,
                 seed: int, chunk_size: int = 64, *, storage_dtype: str = "float32",
                 nonzeros: int = DEFAULT_NONZEROS, factor_dim: int = DEFAULT_FACTOR_DIM,
                 dense_buffer_bytes: int = 1 << 30, projector: Projector | None = None):
        round_to_storage(torch.zeros(1), storage_dtype)  # validates the name
        self.workload = workload
        self.model = workload.build_model(0)
        every = {n: p.detach().to(workload.device) for n, p in params.items()}
        chosen = sketched_parameters(workload, self.model, every)
        self.params = {n: every[n] for n in chosen}
        self.frozen = {n: t for n, t in every.items() if n not in self.params}
        self.names = list(self.params)
        self.storage_dtype = storage_dtype
        self._chunk_size, self._dense_buffer_bytes = chunk_size, dense_buffer_bytes
        self.per_example = PerExampleGradients(workload, self.model, self.params, self.frozen)
        shapes = {n: tuple(t.shape) for n, t in self.params.items()}
        if projector is None:
            projector = projector_for(projector_kind, self.model, shapes, k, seed, nonzeros=nonzeros,
                                      factor_dim=factor_dim)
        else:
            _check_projector(projector, projector_kind, k, seed, sum(t.numel() for t in self.params.values()))
        self._projector = projector
        self._choose_gradients()

    def _choose_gradients(self) -> None:
        # from what the projector declares it consumes, never from its class
        self._gradients: GradientStrategy = gradient_strategy(self._projector, self.per_example, self._chunk_size,
                                                              self._dense_buffer_bytes)

    @property
    def gradients(self) -> GradientStrategy:
        """How inputs become projected gradients (flat, buffered, transposed or Kronecker-factored)."""
        return self._gradients

    # the strategy is a function of these three; replacing one re-derives it
    @property
    def projector(self) -> Projector:
        return self._projector

    @projector.setter
    def projector(self, projector: Projector) -> None:
        self._projector = projector
        self._choose_gradients()

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    @chunk_size.setter
    def chunk_size(self, chunk_size: int) -> None:
        self._chunk_size = chunk_size
        self._choose_gradients()

    @property
    def dense_buffer_bytes(self) -> int:
        return self._dense_buffer_bytes

    @dense_buffer_bytes.setter
    def dense_buffer_bytes(self, dense_buffer_bytes: int) -> None:
        self._dense_buffer_bytes = dense_buffer_bytes
        self._choose_gradients()

    @classmethod
    def from_config(cls, workload: Workload, params: Params, config: str | dict, chunk_size: int = 64,
                    **overrides) -> GradientSketcher:
        """Rebuilds the sketcher whose `config()` is `config` (same projection, same space)."""
        config = json.loads(config) if isinstance(config, str) else config
        options = {key: config[key] for key in ("nonzeros", "factor_dim", "storage_dtype") if key in config}
        sketcher = cls(workload, params, config["projection"], config["k"], config["seed"], chunk_size,
                       **{**options, **overrides})
        rebuilt = json.loads(sketcher.config(config.get("model_version", "")))
        key = "sketched_parameters_sha1"
        if rebuilt.get(key) != config.get(key):
            raise ValueError(f"the sketches were taken over parameters {config.get(key, 'all')}, the workload "
                             f"now chooses {rebuilt.get(key, 'all')} (its sketch settings changed?); "
                             "rematerialise gradient_sketches")
        return sketcher

    def config(self, model_version: str) -> str:
        """Returns the JSON sketch_config recorded with every sketch row (with the chosen
        parameters when only some are sketched, so sketches of other subsets are not mixed)."""
        subset = {}
        if self.frozen:
            settings = getattr(self.workload, "sketch_settings", dict)()
            subset = {**settings, "sketched_parameters": len(self.names),
                      "sketched_parameters_sha1": hashlib.sha1("\n".join(self.names).encode()).hexdigest()[:16]}
        return json.dumps({**self.projector.config(), **self.workload.config(), **subset,
                           "storage_dtype": self.storage_dtype, "model_version": model_version},
                          sort_keys=True)

    # -- public API ------------------------------------------------------------------------

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
            for part, norm, part_loss in self._gradients.sketches(inputs):
                hi = lo + part.shape[0]
                sketch[lo:hi] = round_to_storage(part, storage_dtype)
                grad_norm[lo:hi], loss[lo:hi] = norm, part_loss
                lo = hi
                done.advance(part.shape[0])
        return Sketches(sketch.numpy(), grad_norm.numpy(), loss.numpy())

    def sketch_mean_gradient(self, inputs: torch.Tensor) -> tuple[np.ndarray, float]:
        """Returns (q, loss): the sketch of ∇θ of the mean loss over `inputs`, and that loss."""
        return self._gradients.mean_sketch(inputs)


class CheckpointSketcher:
    """Sketches gradients at several checkpoints of one training run and concatenates them.

    The sketch of example i is [P g_i(θ_{s₁}); …; P g_i(θ_{s_C})] (length C·k), the same
    projection P at every checkpoint (one projector object, built once: it depends on the
    parameter shapes, not their values), so ⟨q_t, z_i⟩ sums the per-checkpoint alignments as
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
              seed: int, chunk_size: int = 64, **options) -> CheckpointSketcher:
        """`checkpoints` is [(step, parameters)] in training order; `options` as GradientSketcher's."""
        projector = options.pop("projector", None)
        sketchers = []
        for _, params in checkpoints:
            sketchers.append(GradientSketcher(workload, params, projector_kind, k, seed, chunk_size,
                                              projector=projector, **options))
            projector = sketchers[-1].projector  # built by the first checkpoint's sketcher, shared after
        return cls(sketchers, [step for step, _ in checkpoints])

    @classmethod
    def from_config(cls, workload: Workload, checkpoints: Sequence[tuple[int, Params]], config: str | dict,
                    chunk_size: int = 64) -> CheckpointSketcher:
        """Rebuilds the sketcher whose `config()` is `config`; the checkpoint steps must match."""
        config = json.loads(config) if isinstance(config, str) else config
        steps = [step for step, _ in checkpoints]
        recorded = config.get("checkpoint_steps", steps)
        if list(recorded) != steps:
            raise ValueError(f"the sketches were taken at checkpoint steps {recorded}, the reference model now has "
                             f"{steps}; rematerialise gradient_sketches")
        projector, sketchers = None, []
        for _, params in checkpoints:
            sketchers.append(GradientSketcher.from_config(workload, params, config, chunk_size, projector=projector))
            projector = sketchers[-1].projector  # one projector for every checkpoint
        return cls(sketchers, steps)

    @property
    def projector(self) -> Projector:
        return self.sketchers[0].projector

    @property
    def dim(self) -> int:
        return len(self.sketchers) * self.projector.k

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

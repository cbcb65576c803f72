"""The projector factory: a projection kind (the `projection` flag of the sketch config) → a projector.

It sits apart from `projectors` and `kronecker` because it needs both and `kronecker`
already imports `projectors`; keeping it here keeps the import graph acyclic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from .kronecker import KroneckerProjector, LayerSpec, kronecker_layout
from .projectors import DEFAULT_FACTOR_DIM, DEFAULT_NONZEROS, PROJECTIONS, DenseProjector, Projector, SJLTProjector


def _dense(kind: str, p: int, k: int, seed: int, **_) -> Projector:
    return DenseProjector(p, k, seed, kind=kind)


def _sjlt(kind: str, p: int, k: int, seed: int, *, nonzeros: int, **_) -> Projector:
    return SJLTProjector(p, k, seed, nonzeros=nonzeros)


def _kronecker(kind: str, p: int, k: int, seed: int, *, nonzeros: int, layout: Sequence[LayerSpec] | None,
               param_shapes: dict[str, tuple[int, ...]] | None, factor_dim: int) -> Projector:
    if layout is None or param_shapes is None:
        raise ValueError("the kronecker projection needs the model's layer layout and parameter shapes "
                         "(GradientSketcher builds them)")
    projector = KroneckerProjector(layout, param_shapes, k, seed, factor_dim=factor_dim, nonzeros=nonzeros)
    if projector.p != p:
        raise ValueError(f"parameter shapes give p={projector.p}, expected {p}")
    return projector


_BUILDERS: dict[str, Callable[..., Projector]] = {"gaussian": _dense, "rademacher": _dense, "sjlt": _sjlt,
                                                  "kronecker": _kronecker}
assert tuple(_BUILDERS) == PROJECTIONS


def make_projector(kind: str, p: int, k: int, seed: int, *, nonzeros: int = DEFAULT_NONZEROS,
                   layout: Sequence[LayerSpec] | None = None,
                   param_shapes: dict[str, tuple[int, ...]] | None = None,
                   factor_dim: int = DEFAULT_FACTOR_DIM) -> Projector:
    """The `kind` projector of p-dimensional gradients to k dimensions, drawn from `seed`.

    `nonzeros` shapes the SJLT (and the Kronecker second stage); the Kronecker projection
    also needs the model's `layout` and `param_shapes` (see `projector_for`).
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown projection {kind!r}; choose one of {PROJECTIONS}")
    return _BUILDERS[kind](kind, p, k, seed, nonzeros=nonzeros, layout=layout, param_shapes=param_shapes,
                           factor_dim=factor_dim)


def projector_for(kind: str, model: nn.Module, param_shapes: dict[str, tuple[int, ...]], k: int, seed: int, *,
                  nonzeros: int = DEFAULT_NONZEROS, factor_dim: int = DEFAULT_FACTOR_DIM) -> Projector:
    """The projector of `model`'s gradients (parameters `param_shapes`, in flat order).

    A function of the shapes, the kind, k, the seed and the options only, so one projector
    serves every checkpoint of a model. The Kronecker layout covers the modules owning the
    parameters in `param_shapes` (a chosen subset of the model's, or all).
    """
    p = sum(math.prod(shape) for shape in param_shapes.values())
    if kind != "kronecker":  # only the factored projection looks at the model's layers
        return make_projector(kind, p, k, seed, nonzeros=nonzeros)
    return make_projector(kind, p, k, seed, nonzeros=nonzeros, layout=kronecker_layout(model, factor_dim,
                                                                                       list(param_shapes)),
                          param_shapes=param_shapes, factor_dim=factor_dim)

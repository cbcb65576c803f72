"""Gradient sketches: per-example gradients at θ₀, randomly projected to k dimensions.

Every projection is a fixed linear map P (k × p) drawn from a seed, so z_i = P g_i and the
sketch of a mean gradient is the mean of the sketches. Four kinds (the `projection` flag),
one interface (`Projector.project(flat)` on (n, p) flat gradients, TRAK's projectors.py
shape): `gaussian` and `rademacher` (dense, generated block by block), `sjlt` (sparse JL,
the default: dense-Gaussian accuracy at nearly the cost of the gradients alone) and
`kronecker` (LoGra-style per-layer factors, never forming the per-example gradient).

Computing per-example gradients is kept apart from projecting them (TRAK's
gradient_computers.py split): each projector declares the gradient input it consumes
(`Projector.consumes`) and the sketcher picks the matching gradient strategy once, from
that declaration.

Modules:
- `projectors`: the `Projector` interface, its `consumes` forms, the dense and sparse JL maps.
- `kronecker`: the factored projection, its layer layout and per-layer sketch math.
- `factory`: `make_projector` / `projector_for`, a projector by kind.
- `gradients`: the per-example gradient strategies (vmap flat, buffered, transposed, hooks).
- `sketcher`: `GradientSketcher` (one checkpoint) and `CheckpointSketcher` (several, one projector).
"""

from .factory import make_projector, projector_for
from .kronecker import KroneckerProjector, LayerSpec, kronecker_layout
from .projectors import PROJECTIONS, DenseProjector, Projector, SJLTProjector
from .sketcher import STORAGE_DTYPES, CheckpointSketcher, GradientSketcher, Sketches, round_to_storage

__all__ = ["PROJECTIONS", "STORAGE_DTYPES", "CheckpointSketcher", "DenseProjector", "GradientSketcher",
           "KroneckerProjector", "LayerSpec", "Projector", "SJLTProjector", "Sketches", "kronecker_layout",
           "make_projector", "projector_for", "round_to_storage"]

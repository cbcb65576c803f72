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

Modules: `projectors` (dense and sparse JL), `kronecker` (the factored projection and its
layer layout), `sketcher` (per-example gradients and the sketchers that project them).
"""

from .kronecker import KroneckerProjector, LayerSpec, kronecker_layout
from .projectors import PROJECTIONS, DenseProjector, Projector, SJLTProjector
from .sketcher import (STORAGE_DTYPES, CheckpointSketcher, GradientSketcher, Sketches, make_projector,
                       round_to_storage)

__all__ = ["PROJECTIONS", "STORAGE_DTYPES", "CheckpointSketcher", "DenseProjector", "GradientSketcher",
           "KroneckerProjector", "LayerSpec", "Projector", "SJLTProjector", "Sketches", "kronecker_layout",
           "make_projector", "round_to_storage"]

"""Curation: choose a budget of B pool examples that maximises the task-weighted surrogate.

The objective
-------------
At a fixed budget, size and normalisation N = N(B) are constants, so GRASP's objective is
    f(S) = Σ_t w_t Û_t(S) − const = N⟨v, s⟩ − N²‖s‖²_D,   s = Σ_{i∈S} z_i,
with v = Σ_t w_t b_t q_t and D = Σ_t w_t C_t (diagonal). Completing the square, this is
−‖N·s − r*‖²_D with target r* = D⁻¹v/2: matching pursuit on the residual r = r* − N·s.
Each greedy step adds the example with the largest gain
    g_i(s) = a_i − 2N²⟨z_i, D s⟩,   a_i = N⟨v, z_i⟩ − N²‖z_i‖²_D,
so redundant examples (aligned with what is already in S) lose value. With D = 0 it is
additive top-k by ⟨v, z_i⟩. Optional constraints: per-domain quotas, exclusion lists, one
example per content hash.

Three ways to run the greedy (`method=`)
----------------------------------------
- "exact": recompute all n gains every step, O(B·n·k). The reference.
- "lazy": the same selection as "exact", row for row, usually at a fraction of the cost.
  f is NOT submodular: g_i(s) is linear in s and rises when z_i is anti-aligned with D·s,
  so the classic lazy greedy (a stale gain is an upper bound) would be wrong. Instead,
  Cauchy–Schwarz in the |D| geometry bounds how far a gain can move since it was computed
  at sum s_ref:
      |g_i(s) − g_i(s_ref)| = 2N²|⟨z_i, D(s − s_ref)⟩| ≤ reach_i · ‖s − s_ref‖_|D|,
      reach_i = 2N²‖z_i‖_|D|.
  A shortlist keeps the top-M candidates by gain at s_ref; everything left out is summarised
  by its largest gain G and largest reach R then, so each of them has gain ≤ G + R·‖s −
  s_ref‖_|D| now. While the shortlist's best gain beats that bound (minus the tie band
  below), the exact greedy's pick provably lies in the shortlist and a step costs O(M·k),
  not O(n·k); when the bound catches up, the shortlist is redrawn. Shortlists nest (pool →
  n/16 capped at 65536 → /8 → /8, `lazy.lazy_sizes`), so most redraws read a small parent, and
  a level whose windows last under two steps doubles. When the bounds cannot keep up at all
  (strong penalties: one pick moves the others' gains by more than the gaps between them),
  lazy notices from the rows it evaluates and takes exact steps for a while, so it is never
  much slower than "exact" (nor faster, in that regime: bench/select.py "strong").
- "batched": windows of m = ⌈B/passes⌉ steps (64 passes by default, m ≤ 2048). Each window
  reads the pool once, keeps the top 2m candidates by current gain, and takes m exact
  greedy steps among them using their Gram matrix (O(m) per step). Approximate, because a
  candidate left out cannot overtake until the next window. Measured: ≥ 99.85% of the exact
  objective on small anti-aligned problems (tests), ≈ 99.95% at n = 10⁴–10⁵ under a strong
  penalty (bench/select.py); with B ≤ passes it is the exact greedy. Its cost does not
  depend on the penalty: ~passes full passes plus O(B·m).

Default: "lazy", because it is the exact greedy — the same rows in the same order as
"exact", which tests and reproducible curation rely on — and it is never much slower than
"exact" while 3× (10⁴ rows) to ~300× (10⁶ rows, predicted) faster under a moderate
penalty (bench/select.py). "batched" is the fastest method whose selections
match the exact ones on small problems (identical when B ≤ passes, within 0.15% of the
objective otherwise), and the one to use for 10⁶-row pools under strong penalties, where
exact certification cannot keep up (bench/select.py: lazy ≈ exact there).

Memory: nothing n×n is formed. Extra memory is the shortlists' rows (≤ n/8, plus their
draw's transient copies; typically ≪ the sketch), 4 MB block temporaries, a batched
window's Gram matrix (≤ 4096² floats) and a few length-n vectors (cost, reach, and a 0/−inf
penalty that encodes the constraints). bench/select.py: peak ≈ 1.25× the sketch at 10⁶,
the sketch included. Matvecs run on one BLAS thread (see `greedy.single_threaded_blas`).

Ties and floating point. Sketches are used in their own dtype (float32 sketches stay
float32: BLAS matvecs, half the memory); s, bounds and gains are float64. A gain is computed
as ⟨z_i, u⟩ − cost_i with u = N·v − 2N²·D·s formed in float64, so the alignment and the
penalty cancel in u before the matvec and its rounding scales with the residual ‖u‖.
That rounding still depends on how a matvec was blocked, so every method treats gains
within tol = 2(k+2)·ε·max‖z_i‖·‖u‖ of the best (a rigorous bound) as tied and takes the
lowest row. That makes exact, lazy and streaming agree row for row, duplicates included.

Streaming. `residual_greedy_streaming` runs the same code over a re-iterable sequence of
(example_ids, sketch block[, domains[, content]]) chunks, e.g. one per shard from a polars
scan. It holds the shortlists (≤ `max_rows_in_memory` rows), one chunk and length-n
vectors, never the pool; each redraw from the pool is one pass over the chunks (the first
pass computes cost, reach and constraint codes; `stats["passes_over_pool"]` counts them). Because it is
the same algorithm on the same rows, its selection equals the in-memory one exactly. (The
two-pass alternative — per-chunk shortlists, then a greedy on their union — needs a bound
on every left-out row over the whole run, which under a real penalty keeps most rows.)

Modules: `objective` (task weights, (v, D)), `pools` (in memory or streamed), `constraints`,
`terms` (per-row costs and reaches), `shortlist`, one module per greedy method (`exact`,
`lazy`, `batched`) and `greedy` (the entry points), `baselines` (top-k, random) and
`protection` (the trust region and task protection around the GRASP selection).
"""

from .base import METHODS, Selection
from .baselines import random_selection, top_k
from .constraints import label_quota
from .greedy import residual_greedy, residual_greedy_streaming
from .objective import grasp_objective, predicted_utilities, scaled_task_weights, task_weight_vector
from .protection import grasp_selection, protected_grasp_selection, trust_region_terms

__all__ = ["METHODS", "Selection", "grasp_objective", "grasp_selection", "label_quota", "predicted_utilities",
           "protected_grasp_selection", "random_selection", "residual_greedy", "residual_greedy_streaming",
           "scaled_task_weights", "task_weight_vector", "top_k", "trust_region_terms"]

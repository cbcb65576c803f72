"""Per-row terms of the greedy's gains (cost, reach, tie band), computed in one pass.

Ties and floating point. Sketches are used in their own dtype (float32 sketches stay
float32: BLAS matvecs, half the memory); s, bounds and gains are float64. A gain is computed
as ⟨z_i, u⟩ − cost_i with u = N·v − 2N²·D·s formed in float64, so the alignment and the
penalty cancel in u before the matvec and its rounding scales with the residual ‖u‖.
That rounding still depends on how a matvec was blocked, so every method treats gains
within tol = 2(k+2)·ε·max‖z_i‖·‖u‖ of the best (a rigorous bound) as tied and takes the
lowest row. That makes exact, lazy and streaming agree row for row, duplicates included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RowTerms:
    """What the greedy needs per row besides its sketch row, computed in one pass.

    Gains are computed as g_i(s) = ⟨z_i, u(s)⟩ − cost_i with u(s) = N·v − 2N²·D·s: the
    cancellation between alignment and penalty happens once, in float64, in the k-vector u,
    so the n-row matvec's rounding scales with ‖u‖ (the residual), not with ‖N·v‖.
    """

    cost: np.ndarray  # (n,) N²‖z_i‖²_D, the self-penalty of adding z_i
    reach: np.ndarray  # (n,) 2N²‖z_i‖_|D|: how fast g_i can move per unit of ‖Δs‖_|D|
    zmax: float  # max_i ‖z_i‖₂
    rtol: float  # relative rounding of a matvec row, (k+2)·ε of the sketch dtype
    nv: np.ndarray  # N·v
    wscale: np.ndarray  # 2N²·d
    dabs: np.ndarray  # |d|: the geometry of ‖·‖_|D|

    def __post_init__(self):
        self.reach_max = float(self.reach.max(initial=0.0))

    def direction(self, s: np.ndarray) -> np.ndarray:
        """Returns u(s) = N·v − 2N²·D·s (float64): gains are z @ u − cost."""
        return self.nv - self.wscale * s

    def tol(self, u: np.ndarray) -> float:
        """Returns the tie band: two computations of a gain may differ by this much (rounding)."""
        return 2 * self.rtol * self.zmax * float(np.sqrt(u @ u))

    def norm(self, x: np.ndarray) -> float:
        """Returns ‖x‖_|D|."""
        return float(np.sqrt(x * x @ self.dabs))


def row_terms(pool, v: np.ndarray, d: np.ndarray, scale: float) -> RowTerms:
    """One pass over the pool; returns the per-row terms (float64, length n)."""
    cost, reach, zmax, buffer = [], [], 0.0, None
    for _, zb in pool.blocks():
        dt = zb.dtype
        if buffer is None or len(buffer) < len(zb) or buffer.dtype != dt:
            buffer = np.empty_like(zb)
        sq = np.multiply(zb, zb, out=buffer[:len(zb)])  # one block-sized buffer, never n×k
        cost.append((sq @ (scale ** 2 * d).astype(dt)).astype(np.float64))
        reach.append(2 * abs(scale) * np.sqrt((sq @ (scale ** 2 * np.abs(d)).astype(dt)).astype(np.float64)))
        if len(zb):
            zmax = max(zmax, float(np.sqrt((sq @ np.ones(len(v), dt)).max())))
    dtype = pool.dtype or np.float64
    return RowTerms(np.concatenate(cost) if cost else np.zeros(0), np.concatenate(reach) if reach else np.zeros(0),
                    zmax * (1 + 1e-6), (len(v) + 2) * float(np.finfo(dtype).eps), scale * v, 2 * scale ** 2 * d,
                    np.abs(d))

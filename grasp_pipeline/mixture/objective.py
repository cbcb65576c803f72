"""Mixture optimisation: domain weights π on the simplex that maximise the expected surrogate.

Drawing n_d = π_d·B examples without replacement from the N_d pool examples of each domain d
(domain mean sketch μ_d, per-coordinate within-domain population variance σ²_d), the
expected sketch sum and its expected square are
    E[s] = B·Mπ,    E[s_j²] = (B·Mπ)_j² + Σ_d n_d σ²_dj (N_d − n_d)/(N_d − 1)
(the finite-population factor: fit subsets and mixture samples never repeat an example), so
the task-weighted expected GRASP utility at budget B is the quadratic
    f(π) = const + N·B·vᵀMπ − N²·(B²·πᵀMᵀDMπ + B·Σ_d π_d c_d (N_d − π_d·B)/(N_d − 1)),
with c_d = ⟨σ²_d, D⟩. It is exact while every n_d ≤ N_d (`max_repeats` ≤ 1); beyond, a sample
takes whole copies of a domain (`references.sample_mixture`) and the formula no longer holds.
Its Hessian −2N²B²(MᵀDM − diag(c_d/(N_d − 1))) carries a convex part from the factor, so f is
concave only when MᵀDM dominates it (`MixtureObjective.max_curvature`). SLSQP maximises f
over {π ≥ 0, Σπ = 1, π_d ≤ cap_d}: from one start when f is concave there (a small convex
QP), from several when it is not (`optimise_mixture`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ..config.validation import SettingError
from ..selection.objective import grasp_objective
from ..surrogates.data import NORMALISATIONS, SIZE_TERMS


@dataclass
class DomainStats:
    domains: list[str]
    counts: np.ndarray  # (D,)
    means: np.ndarray  # (D, k)
    variances: np.ndarray  # (D, k)
    # the natural mixture (corpus.natural: the corpus's shares, not the capped pool's); None = the pool's counts
    natural: np.ndarray | None = None


def domain_stats(pool_sketch: np.ndarray, domains: np.ndarray,
                 natural: dict[str, float] | None = None) -> DomainStats:
    """Per-domain counts, sketch means and variances of the pool, domains sorted; `natural` gives
    the natural mixture's weight of each domain (renormalised over the pool's domains)."""
    names = sorted(set(domains.tolist()))
    z = pool_sketch.astype(np.float64)
    return DomainStats(names, np.array([(domains == d).sum() for d in names]),
                       np.stack([z[domains == d].mean(0) for d in names]),
                       np.stack([z[domains == d].var(0) for d in names]), natural_over(natural, names))


def natural_over(natural: dict[str, float] | None, names: list[str]) -> np.ndarray | None:
    """The natural mixture's weights over `names`, renormalised (None stays None); a domain without a
    weight is an error naming it."""
    if natural is None:
        return None
    missing = [d for d in names if d not in natural]
    if missing:
        raise ValueError(f"the natural mixture has no weight for domain(s) {', '.join(missing)}")
    weights = np.array([float(natural[d]) for d in names])
    return weights / weights.sum()


class MixtureObjective:
    """The expected task-weighted GRASP utility f(π) at budget B, in utility units (module doc)."""

    def __init__(self, stats: DomainStats, task_sketch: np.ndarray, grasp_params: list[dict],
                 weights: np.ndarray, budget: int):
        k = stats.means.shape[1]
        self.v, self.d = grasp_objective(grasp_params, task_sketch, weights, k)
        self.scale = float(NORMALISATIONS[grasp_params[0]["normalisation"]](np.array([float(budget)]))[0])
        size_fn = SIZE_TERMS[grasp_params[0]["size_term"]]
        size_value = float(size_fn(np.array([budget]))[0]) if size_fn else 0.0
        self.constant = float(sum(w * (p["intercept"] + p["size_coef"] * size_value)
                                  for w, p in zip(weights, grasp_params)))
        self.budget = budget
        self.counts = np.asarray(stats.counts, dtype=np.float64)
        self.means, self.spread = stats.means.T, stats.variances @ self.d  # (k, D), (D,)
        # 1/(N_d − 1); a one-example domain has σ²_d = 0, so its spread term is 0 whatever this is
        self.finite = np.divide(1.0, self.counts - 1, out=np.zeros_like(self.counts), where=self.counts > 1)

    def __call__(self, pi: np.ndarray) -> float:
        mean_sum = self.budget * self.means @ pi
        variance = self.budget * (self.spread * pi * (self.counts - self.budget * pi) * self.finite).sum()
        return float(self.constant + self.scale * self.v @ mean_sum
                     - self.scale ** 2 * (mean_sum ** 2 @ self.d + variance))

    def gradient(self, pi: np.ndarray) -> np.ndarray:
        mean_sum = self.budget * self.means @ pi
        variance = self.budget * self.spread * (self.counts - 2 * self.budget * pi) * self.finite
        return (self.scale * self.budget * self.means.T @ self.v
                - self.scale ** 2 * (2 * self.budget * self.means.T @ (self.d * mean_sum) + variance))

    def hessian(self) -> np.ndarray:
        """Returns the (D, D) Hessian of f: −2N²B²(MᵀDM − diag(c_d/(N_d − 1))), constant in π."""
        curvature = self.means.T @ (self.d[:, None] * self.means) - np.diag(self.spread * self.finite)
        return -2 * self.scale ** 2 * self.budget ** 2 * curvature

    @property
    def max_curvature(self) -> float:
        """Returns the largest eigenvalue of the Hessian along the simplex (directions with Σδ = 0).

        f is concave on the simplex iff this is ≤ 0 (up to rounding, `concave`); directions off
        the simplex never matter to the optimiser. 0.0 for a single domain (one feasible point).
        """
        n = len(self.counts)
        if n < 2:
            return 0.0
        tangent = np.linalg.qr(np.eye(n)[:, :-1] - 1.0 / n)[0]  # orthonormal basis of {Σδ = 0}
        return float(np.linalg.eigvalsh(tangent.T @ self.hessian() @ tangent).max())

    @property
    def concave(self) -> bool:
        """Whether f is concave on the simplex: `max_curvature` ≤ 0 up to rounding of the Hessian."""
        return self.max_curvature <= 1e-9 * max(np.abs(self.hessian()).max(), 1e-300)


def repetition_caps(corpus_bytes: dict[str, int] | None, names: list[str], training_bytes: int,
                    max_epochs: float) -> np.ndarray:
    """(D,) the largest share of a training run of `training_bytes` each domain of `names` may supply:
    `max_epochs` passes over its bytes in the whole corpus (weights are shares of training bytes).
    Ones when no run size is stated (0). A domain the corpus sizes do not list (a new domain's,
    before the corpus is rebuilt) is not capped. Why a cap and not a penalty: Muennighoff et al.
    (2023) find up to ~4 epochs of a source cost little, past that returns fall fast, so a
    mixture that reads a small domain forty times is not one a trainer can use."""
    if not training_bytes:
        return np.ones(len(names))
    if corpus_bytes is None:
        raise SettingError(f"loop.training_bytes = {training_bytes} needs each domain's bytes in the corpus "
                           "(corpus_sources, written by corpus_shards since its code version 2): rematerialise "
                           "corpus_shards, or set loop.training_bytes = 0")
    caps = np.array([min(1.0, max_epochs * corpus_bytes[d] / training_bytes) if d in corpus_bytes else 1.0
                     for d in names])
    if caps.sum() < 1:
        total = sum(corpus_bytes.get(d, 0) for d in names)
        raise SettingError(f"loop.training_bytes = {training_bytes}: with loop.max_epochs = {max_epochs:g} the "
                           f"corpus's {total} bytes supply at most {max_epochs * total:.0f}; lower "
                           "loop.training_bytes or raise loop.max_epochs")
    return caps


def project_capped_simplex(x: np.ndarray, caps: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Returns the Euclidean projection of x onto {0 ≤ π ≤ caps, Σπ = 1} (caps must sum to ≥ 1).

    The projection is clip(x − τ, 0, caps) for the shift τ at which it sums to 1; the sum falls
    monotonically in τ, so bisection finds τ (100 halvings reach float precision from any
    start). The remaining rounding error is put on entries strictly inside their bounds, so
    the sum is 1 to machine precision.
    """
    x, caps = np.asarray(x, dtype=np.float64), np.asarray(caps, dtype=np.float64)
    lo, hi = float((x - caps).min()) - 1.0, float(x.max())  # Σ at lo = Σcaps ≥ 1, Σ at hi = 0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if np.clip(x - mid, 0, caps).sum() >= 1:
            lo = mid
        else:
            hi = mid
    pi = np.clip(x - lo, 0, caps)
    inside = (pi > 0) & (pi < caps)
    if inside.any():
        pi[inside] += (1 - pi.sum()) / inside.sum()
        pi = np.clip(pi, 0, caps)
    return pi


def optimise_mixture(objective: MixtureObjective, caps: np.ndarray) -> np.ndarray:
    """Returns π maximising the objective over the capped simplex; Σπ = 1 exactly, 0 ≤ π ≤ caps.

    When the objective is concave on the simplex one SLSQP run from the caps-proportional
    start finds the optimum. When it is not (`MixtureObjective.concave`), SLSQP also starts
    from the natural and uniform mixtures and from each domain's vertex (each projected onto
    the capped simplex) and the best value wins (the first on ties).
    """
    n = len(caps)
    if caps.sum() < 1 - 1e-9:
        raise ValueError(f"domain caps sum to {caps.sum():.3f} < 1: the budget cannot be filled; "
                         "lower budget_fraction or raise max_repeats")
    starts = [caps / caps.sum()]  # feasible: caps sum to ≥ 1, so every entry stays under its cap
    if not objective.concave:
        starts += [project_capped_simplex(p, caps) for p in
                   [objective.counts / objective.counts.sum(), np.full(n, 1.0 / n), *np.eye(n)]]
    # SLSQP's stopping tests are absolute: on a raw objective of ~1e4 utility units it can stop
    # far from the optimum and short of Σπ = 1, so it sees f in units of its largest curvature
    unit = max(np.abs(objective.hessian()).max(), np.abs(objective.gradient(starts[0])).max(), 1e-300)
    best, best_value = None, -np.inf
    for start in starts:
        result = minimize(lambda p: -objective(p) / unit, start, jac=lambda p: -objective.gradient(p) / unit,
                          method="SLSQP", bounds=[(0.0, float(c)) for c in caps],
                          constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones(n)}],
                          options={"ftol": 1e-12, "maxiter": 500})
        pi = project_capped_simplex(result.x, caps)
        value = objective(pi)
        if best is None or value > best_value:
            best, best_value = pi, value
    return best

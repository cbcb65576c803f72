"""Peer mixers fitted on the same fit subsets: RegMix (gradient-boosted trees) and a log-linear
data-mixing law, each with the proposer its authors use.

Both read only subset-level data: a subset's domain shares π (fractions of its members per
domain), its size |S| and its retrained utility per task (−loss on `dev`). Neither looks at
sketches, which is the point of comparing them with GRASP's mixture.

- `regmix` (Liu et al. 2024, "RegMix: Data Mixture as Regression"): one LightGBM regressor
  per task on (π, |S|); candidates are Dirichlet draws around the natural mix; the mixture
  is the average of the top-k candidates by predicted task-weighted utility at the budget.
- `loglinear` (Ye et al. 2024, "Data Mixing Laws"; the KL pull as in Olmix): per task,
  loss = c + exp(b₀ + b·log|S| + Σ_d θ_d π_d), fitted by nonlinear least squares; the
  mixture maximises the task-weighted predicted utility minus λ·KL(π ‖ natural) over the
  capped simplex — a concave problem (−exp of an affine map is concave, −KL is concave),
  solved exactly with SLSQP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares, minimize

from .objective import project_capped_simplex


@dataclass
class MixtureData:
    """Subset-level training data of a peer mixer: shares (m, D), sizes (m,), utility (m, T)."""

    shares: np.ndarray
    sizes: np.ndarray
    utility: np.ndarray


def subset_shares(members: list[np.ndarray], domain_of_row: np.ndarray, n_domains: int) -> np.ndarray:
    """(m, D) fraction of each subset's members (pool rows) in each domain (codes 0..D−1)."""
    return np.stack([np.bincount(domain_of_row[rows], minlength=n_domains) / max(1, len(rows)) for rows in members])


# ---------------------------------------------------------------- RegMix


def fit_regmix(data: MixtureData, seed: int = 0, n_estimators: int = 200, learning_rate: float = 0.05,
               num_leaves: int = 15, min_child_samples: int = 5) -> list:
    """One LightGBM regressor per task on [π, |S|] (RegMix's features plus size); returns the models."""
    import lightgbm

    features = np.column_stack([data.shares, data.sizes])
    return [lightgbm.LGBMRegressor(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                                   min_child_samples=min_child_samples, random_state=seed, deterministic=True,
                                   force_row_wise=True, n_jobs=1, verbose=-1).fit(features, data.utility[:, t])
            for t in range(data.utility.shape[1])]


def propose_regmix(models: list, natural: np.ndarray, caps: np.ndarray, budget: int, weights: np.ndarray, *,
                   candidates: int = 20000, concentration: float = 10.0, top_k: int = 100,
                   seed: int = 0) -> tuple[np.ndarray, float]:
    """RegMix's proposer: Dirichlet(concentration·natural) candidates within the caps, the mean of the
    top-k by predicted task-weighted utility at `budget`; returns (π, its predicted utility)."""
    rng = np.random.default_rng(seed)
    draws = rng.dirichlet(np.maximum(concentration * natural, 1e-3), size=candidates)
    draws = draws[(draws <= caps + 1e-12).all(1)]
    predicted = regmix_utility(models, draws, budget, weights)
    best = draws[np.argsort(-predicted, kind="stable")[:top_k]].mean(0)
    best = project_capped_simplex(best, caps)
    return best, float(regmix_utility(models, best[None], budget, weights)[0])


def regmix_utility(models: list, shares: np.ndarray, budget: int, weights: np.ndarray) -> np.ndarray:
    """(n,) task-weighted predicted utility of mixtures `shares` (n, D) at `budget` examples."""
    features = np.column_stack([shares, np.full(len(shares), float(budget))])
    return np.column_stack([m.predict(features) for m in models]) @ weights


# ---------------------------------------------------------------- log-linear mixing law


def fit_loglinear(data: MixtureData) -> list[dict]:
    """Per task, loss = c + exp(b₀ + b·log|S| + Σ_d θ_d π_d) by nonlinear least squares; returns params.

    The shares sum to 1, so θ is identified only up to a constant, which b₀ absorbs: θ is
    centred (Σ θ_d = 0) after the fit.
    """
    out = []
    log_size = np.log(data.sizes.astype(float))
    for t in range(data.utility.shape[1]):
        loss = -data.utility[:, t]
        floor = float(loss.min())

        def residual(p, loss=loss):  # bound now: the fit runs inside this iteration
            return p[0] + np.exp(p[1] + p[2] * log_size + data.shares @ p[3:]) - loss

        start = np.concatenate([[0.5 * floor, np.log(max(float(loss.mean()) - 0.5 * floor, 1e-3)), 0.0],
                                np.zeros(data.shares.shape[1])])
        fitted = least_squares(residual, start, method="trf", max_nfev=5000).x
        theta = fitted[3:] - fitted[3:].mean()
        out.append({"c": float(fitted[0]), "b0": float(fitted[1] + fitted[3:].mean()), "b": float(fitted[2]),
                    "theta": theta.tolist()})
    return out


def loglinear_utility(params: list[dict], shares: np.ndarray, budget: int, weights: np.ndarray) -> np.ndarray:
    """(n,) task-weighted predicted utility (−loss) of mixtures `shares` (n, D) at `budget`."""
    shares = np.atleast_2d(shares)
    per_task = np.column_stack([-(p["c"] + np.exp(p["b0"] + p["b"] * np.log(budget) + shares @ np.asarray(p["theta"])))
                                for p in params])
    return per_task @ weights


def propose_loglinear(params: list[dict], natural: np.ndarray, caps: np.ndarray, budget: int, weights: np.ndarray,
                      kl_weight: float) -> tuple[np.ndarray, float]:
    """argmax over the capped simplex of predicted utility − kl_weight·KL(π ‖ natural); returns (π, utility)."""
    log_natural = np.log(np.maximum(natural, 1e-12))

    def objective(pi):
        pi = np.maximum(pi, 1e-12)
        return -(loglinear_utility(params, pi, budget, weights)[0] - kl_weight * float(pi @ (np.log(pi) - log_natural)))

    n = len(natural)
    result = minimize(objective, project_capped_simplex(natural, caps), method="SLSQP",
                      bounds=[(0.0, float(c)) for c in caps],
                      constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1, "jac": lambda p: np.ones(n)}],
                      options={"ftol": 1e-12, "maxiter": 500})
    pi = project_capped_simplex(np.clip(result.x, 0, None), caps)
    return pi, float(loglinear_utility(params, pi, budget, weights)[0])

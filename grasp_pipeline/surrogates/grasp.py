"""GRASP: the interaction-aware surrogate of DESIGN §2 (alignment minus a quadratic penalty)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import OnSketchBlock, Surrogate
from .data import NORMALISATIONS, SIZE_TERMS, SubsetData
from .least_squares import bounded_least_squares
from .normal_equations import fit_shared_columns


@dataclass
class Grasp(OnSketchBlock, Surrogate):
    """The interaction-aware surrogate of DESIGN §2 with one (φ, N, H, ridge, block, k') choice.

    `sketch_block` picks one reference checkpoint's block of sketch columns (-1: all of
    them, concatenated); `sketch_dim` k' > 0 then uses its first k' coordinates only: a
    prefix of a random projection is itself a (rescaled) random projection to k'
    dimensions, so one wide sketch serves every candidate dimension; 0 means all.
    """

    size_term: str = "log"  # none | linear | log
    normalisation: str = "mean"  # none | sqrt | mean
    geometry: str = "identity"  # identity | diagonal | none (the ablation without the interaction term)
    ridge: float = 1e-3
    sketch_dim: int = 0
    sketch_block: int = -1
    method: str = field(default="grasp", init=False)

    def features(self, data: SubsetData, task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (free columns [1, φ], alignment A_t (m,), penalty columns Q (m, 1|k'))."""
        free, alignment, penalty = self.design(data)
        return free, alignment[:, task], penalty

    def design(self, data: SubsetData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (free columns [1, φ] (m, 1|2), alignment A_t of every task (m, T), penalty columns Q (m, 1|k'))."""
        free = [np.ones(len(data.sizes))]
        if SIZE_TERMS[self.size_term] is not None:
            free.append(SIZE_TERMS[self.size_term](data.sizes))
        dims = self.columns(data)
        z_s = data.sum_z[:, dims] * NORMALISATIONS[self.normalisation](data.sizes)[:, None]
        penalty = (z_s ** 2).sum(1, keepdims=True) if self.geometry == "identity" else z_s ** 2
        if self.geometry == "none":  # b-only: a zero penalty column, which every solver leaves at c = 0
            penalty = np.zeros((len(z_s), 1))
        return np.column_stack(free), z_s @ data.task_sketch[:, dims].T, penalty

    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        free, alignment, penalty = self.features(data, task)
        x = np.column_stack([free, alignment, -penalty])[rows]
        n_free = free.shape[1]
        nonneg = np.arange(x.shape[1]) >= n_free
        # the ridge regularises the learned geometry H (DESIGN §2); a single identity weight
        # c needs none, and the alignment weight b is never shrunk
        ridge = np.where(nonneg, self.ridge if self.geometry == "diagonal" else 0.0, 0.0)
        ridge[n_free] = 0.0
        return self._params(data, bounded_least_squares(x, data.utility[rows, task], nonneg, ridge), n_free)

    def fit_folds(self, data: SubsetData, row_sets: list[np.ndarray]) -> list[list[dict]]:
        """Returns, for each row set, every task's params: what `fit` returns, from the normal
        equations of all tasks at once (they share the free and penalty columns), each row set
        warm-started from the previous one's active sets."""
        free, alignment, penalty = self.design(data)
        # as in `fit`: the ridge shapes the learned diagonal H only; the alignment weight b is never shrunk
        ridge = self.ridge if self.geometry == "diagonal" else 0.0
        fitted, passive = [], None
        for rows in row_sets:
            betas, passive = fit_shared_columns(free[rows], alignment[rows], -penalty[rows],
                                                data.utility[rows], ridge, passive)
            fitted.append([self._params(data, beta, free.shape[1]) for beta in betas])
        return fitted

    def _params(self, data: SubsetData, beta: np.ndarray, n_free: int) -> dict:
        return {"intercept": float(beta[0]),
                "size_coef": float(beta[1]) if n_free == 2 else 0.0,
                "b": float(beta[n_free]), "penalty": beta[n_free + 1:].tolist(), **self.range_params(data),
                **self.config()}

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return grasp_subset_utility(params, data.sum_z, data.sizes, data.task_sketch[task])

    def predict_tasks(self, data: SubsetData, params: list[dict]) -> np.ndarray:
        """Returns Û (m, T) of every task from one design (what `predict` gives, column by column)."""
        free, alignment, penalty = self.design(data)
        coefs = np.array([[p["intercept"], p["size_coef"]][:free.shape[1]] for p in params])  # (T, 1|2)
        penalties = np.array([p["penalty"] for p in params])  # (T, 1|k')
        return free @ coefs.T + alignment * np.array([p["b"] for p in params]) - penalty @ penalties.T

    def config(self) -> dict:
        return {"method": "grasp", "size_term": self.size_term, "normalisation": self.normalisation,
                "geometry": self.geometry, "ridge": self.ridge, "sketch_dim": self.sketch_dim,
                "sketch_block": self.sketch_block}


def grasp_subset_utility(params: dict, sum_z: np.ndarray, sizes: np.ndarray, task_sketch: np.ndarray) -> np.ndarray:
    """Û_t(S) of one task's fitted `grasp` params for subsets given by their sketch sums
    Σ_{i∈S} z_i (s, width) and sizes (s,): what `Grasp.predict` returns, without a SubsetData
    (selection uses it to score candidate selections)."""
    sizes = np.asarray(sizes, float)
    start, stop = params.get("sketch_range") or (0, params.get("sketch_dim") or sum_z.shape[1])
    z_s = np.asarray(sum_z, float)[:, start:stop] * NORMALISATIONS[params["normalisation"]](sizes)[:, None]
    size_term = SIZE_TERMS[params["size_term"]]
    size_part = params["size_coef"] * size_term(sizes) if size_term is not None else 0.0
    penalty = np.asarray(params["penalty"], float)
    quadratic = (z_s ** 2).sum(1) * penalty[0] if len(penalty) == 1 else (z_s ** 2) @ penalty
    return params["intercept"] + size_part + params["b"] * (z_s @ np.asarray(task_sketch,
                                                                             float)[start:stop]) - quadratic

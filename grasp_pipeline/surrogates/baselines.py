"""Baselines on the same subsets: size only, additive gradient-dot, TRAK-style kernel, linear datamodel."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import OnSketchBlock, Surrogate
from .data import SubsetData
from .least_squares import bounded_least_squares


class LinearOnScore(Surrogate):
    """a + b·score(S) by ordinary least squares, for additive baselines and size."""

    def score(self, data: SubsetData, task: int) -> np.ndarray:
        raise NotImplementedError

    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        x = np.column_stack([np.ones(len(rows)), self.score(data, task)[rows]])
        beta = bounded_least_squares(x, data.utility[rows, task], np.zeros(2, bool), np.zeros(2))
        return {"intercept": float(beta[0]), "slope": float(beta[1]), **self.range_params(data), **self.config()}

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return params["intercept"] + params["slope"] * self.score(data, task)


class SizeOnly(LinearOnScore):
    method = "size"

    def score(self, data, task):
        return data.sizes.astype(float)


@dataclass
class GradDot(OnSketchBlock, LinearOnScore):
    sketch_block: int = -1
    method: str = field(default="grad_dot", init=False)

    def score(self, data, task):
        dims = self.columns(data)
        return data.sum_z[:, dims] @ data.task_sketch[task, dims]

    def config(self):
        return {"method": "grad_dot", "sketch_block": self.sketch_block}

    @staticmethod
    def example_scores(pool_sketch: np.ndarray, task_sketch: np.ndarray) -> np.ndarray:
        """Returns (n,) additive per-example scores ⟨q_t, z_i⟩ for one task."""
        return pool_sketch @ task_sketch

    @staticmethod
    def weighted_example_scores(pool_sketch: np.ndarray, task_sketch: np.ndarray, task_params: list[dict],
                                weights: np.ndarray) -> np.ndarray:
        """Returns (n,) Σ_t w_t·slope_t·⟨q_t, z_i⟩, each task on its fitted sketch columns (top-k selection)."""
        total = np.zeros(len(pool_sketch))
        for w, p, q in zip(weights, task_params, task_sketch):
            dims = slice(*p.get("sketch_range", (0, pool_sketch.shape[1])))
            total += w * p["slope"] * GradDot.example_scores(pool_sketch[:, dims], np.asarray(q)[dims])
        return total


@dataclass
class Trak(OnSketchBlock, LinearOnScore):
    damping: float = 1e-3  # λ relative to the mean eigenvalue of ZᵀZ
    sketch_block: int = -1
    method: str = field(default="trak", init=False)

    def score(self, data, task):
        key = ("trak", self.damping, self.sketch_block)
        if key not in data.cache:  # one kernel solve serves every fold and task
            dims = self.columns(data)
            data.cache[key] = data.membership @ self.example_scores(data.pool_sketch[:, dims],
                                                                    data.task_sketch[:, dims].T)
        return data.cache[key][:, task]

    def example_scores(self, pool_sketch: np.ndarray, task_sketch: np.ndarray) -> np.ndarray:
        z = pool_sketch.astype(np.float64)
        gram = z.T @ z
        gram += self.damping * np.trace(gram) / len(gram) * np.eye(len(gram))
        return z @ np.linalg.solve(gram, task_sketch)

    def config(self):
        return {"method": "trak", "damping": self.damping, "sketch_block": self.sketch_block}


@dataclass
class Datamodel(Surrogate):
    """Linear datamodel: ridge regression of utility on the 0/1 membership mask."""

    ridge: float = 1.0
    method: str = field(default="datamodel", init=False)

    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        return self.fit_folds(data, [rows], tasks=[task])[0][0]

    def fit_folds(self, data: SubsetData, row_sets: list[np.ndarray],
                  tasks: list[int] | None = None) -> list[list[dict]]:
        """Returns each row set's params for every task (or `tasks`): one solve per row set serves all tasks."""
        tasks = list(range(len(data.tasks))) if tasks is None else tasks
        fitted = []
        for rows in row_sets:
            x_mean, xc, gram = self._centred(data, rows)
            y = data.utility[np.ix_(rows, tasks)]
            y_mean = y.mean(0)
            # dual form: m_fit ≪ n_pool, so solve the (m × m) system
            alpha = np.linalg.solve(gram + self.ridge * np.eye(len(rows)), y - y_mean)
            weights = xc.T @ alpha
            fitted.append([{"intercept": float(y_mean[j] - x_mean @ weights[:, j]), "weights": weights[:, j].tolist(),
                            **self.config()} for j in range(len(tasks))])
        return fitted

    @staticmethod
    def _centred(data: SubsetData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (mean mask, centred masks, their Gram matrix) of `rows`, cached: they serve every task and ridge."""
        key = ("datamodel", rows.tobytes())
        if key not in data.cache:
            x = data.membership[rows].toarray()
            x_mean = x.mean(0)
            xc = x - x_mean
            data.cache[key] = (x_mean, xc, xc @ xc.T)
        return data.cache[key]

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return params["intercept"] + data.membership @ np.asarray(params["weights"])

    def config(self):
        return {"method": "datamodel", "ridge": self.ridge}

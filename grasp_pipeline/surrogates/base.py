"""The surrogate interface, and the mix-in of methods that read one checkpoint block of the sketches."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .data import SubsetData, sketch_range


class Surrogate(ABC):
    """One configuration of one method; `fit` sees only the rows it is given."""

    method: str

    @abstractmethod
    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        """Returns JSON-serialisable parameters in utility units."""

    @abstractmethod
    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        """Returns predicted utility for every subset (m,)."""

    def fit_folds(self, data: SubsetData, row_sets: list[np.ndarray]) -> list[list[dict]]:
        """Returns [[fit(data, rows, t) for every task t] for rows in row_sets]: what cross-validation
        needs; methods whose tasks and folds share work override it with the same result, faster."""
        return [[self.fit(data, rows, t) for t in range(len(data.tasks))] for rows in row_sets]

    def predict_tasks(self, data: SubsetData, params: list[dict]) -> np.ndarray:
        """Returns predicted utility (m, T) of every subset from each task's params (`predict`, column by column)."""
        return np.column_stack([self.predict(data, p, t) for t, p in enumerate(params)])

    def config(self) -> dict:
        return {"method": self.method}

    def range_params(self, data: SubsetData) -> dict:
        """Fitted-params entries naming the sketch columns used (none for sketch-free methods)."""
        return {}


class OnSketchBlock:
    """Methods that read the sketches choose which checkpoint block (`sketch_block`) they use;
    the columns go into the fitted params as `sketch_range`, for selection and mixtures."""

    sketch_block: int = -1

    def columns(self, data: SubsetData) -> slice:
        return slice(*sketch_range(data, self.sketch_block, getattr(self, "sketch_dim", 0)))

    def range_params(self, data: SubsetData) -> dict:
        return {"sketch_range": list(sketch_range(data, self.sketch_block, getattr(self, "sketch_dim", 0)))}

"""Configuration choice by the LCB protocol: declared candidate sets, K-fold CV on fit subsets only.

Every method's candidates form a finite set declared up front; K-fold CV over the `fit`
subsets (folds stratified by sampler) gives per-fold scores = mean over (sampler, task) of
Spearman ρ on the held-out fold; the candidate with the highest mean − z_{1−δ/|C|}·sd/√K
wins. `holdout` subsets are never passed to any fit or choice: every function here
receives the fit rows explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat

import numpy as np
from scipy import stats
from threadpoolctl import threadpool_limits

from ..config.params import SurrogateParams
from ..infra import progress
from ..infra.processes import available_cores, worker_pool
from ..stats import nan_mean, spearman_columns
from .base import Surrogate
from .baselines import Datamodel, GradDot, SizeOnly, Trak
from .data import SubsetData
from .grasp import Grasp


def candidate_sets(params: SurrogateParams, sketch_blocks: int = 1) -> dict[str, list[Surrogate]]:
    """Returns the declared candidate set of every method, for sketches of `sketch_blocks` blocks."""
    blocks = params.sketch_blocks or (tuple(range(sketch_blocks)) if sketch_blocks > 1 else (-1,))
    # the ridge only shapes a learned diagonal H: identity geometry gets one candidate, not one per ridge
    geometries = [(g, r) for g in params.grasp_geometries
                  for r in (params.grasp_ridges if g == "diagonal" else (0.0,))]
    grasp = [Grasp(size_term=s, normalisation=n, geometry=g, ridge=r, sketch_dim=k, sketch_block=b)
             for b in blocks for s in params.grasp_size_terms for n in params.grasp_normalisations
             for g, r in geometries for k in params.grasp_sketch_dims]
    return {"grasp": grasp, "grad_dot": [GradDot(b) for b in blocks],
            "trak": [Trak(params.trak_damping, b) for b in blocks],
            "datamodel": [Datamodel(r) for r in params.datamodel_ridges], "size": [SizeOnly()]}


def stratified_folds(samplers: np.ndarray, rows: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """Splits `rows` into k folds, each sampler's rows spread evenly; returns fold row arrays."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    offset = 0  # continue the round-robin across samplers so total fold sizes stay within ±1
    for sampler in sorted(set(samplers[rows])):
        mine = rng.permutation(rows[samplers[rows] == sampler])
        for i, row in enumerate(mine):
            folds[(offset + i) % k].append(int(row))
        offset += len(mine)
    return [np.sort(np.asarray(f, dtype=int)) for f in folds]


def fold_score(data: SubsetData, predicted: np.ndarray, rows: np.ndarray) -> float:
    """Mean over (sampler, task) of Spearman ρ between predicted (m, T) and actual on `rows`."""
    scores = []
    for sampler in sorted(set(data.samplers[rows])):
        mine = rows[data.samplers[rows] == sampler]
        scores += spearman_columns(predicted[mine], data.utility[mine]).tolist()
    return nan_mean(scores)


def fit_all_tasks(surrogate: Surrogate, data: SubsetData, rows: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Fits every task on `rows`; returns (params per task, predictions (m, T))."""
    params = surrogate.fit_folds(data, [rows])[0]
    return params, surrogate.predict_tasks(data, params)


def cross_validate(candidate: Surrogate, data: SubsetData, fit_rows: np.ndarray,
                   folds: list[np.ndarray]) -> list[float]:
    """Returns the candidate's `fold_score` on each held-out fold, fitted on the other `fit_rows`."""
    fitted = candidate.fit_folds(data, [np.setdiff1d(fit_rows, held_out) for held_out in folds])
    return [fold_score(data, candidate.predict_tasks(data, params), held_out)
            for params, held_out in zip(fitted, folds)]


class CandidateWorkers:
    """Cross-validates candidates on one SubsetData in `workers` processes, or in this one.

    The fits are many small dense solves: BLAS runs single-threaded (its threads cost more
    than they gain at this size, most of all on a busy machine) and the candidates spread
    over processes instead. Every candidate is scored on its own from the same inputs, so
    the scores do not depend on the number of workers or on which worker ran what.
    """

    def __init__(self, data: SubsetData, workers: int = 1):
        if workers < 0:
            raise ValueError(f"surrogate.workers must be ≥ 0 (0 = one per CPU core), got {workers}")
        self.data = data
        self.workers = workers or available_cores()
        self.executor = None

    def __enter__(self) -> CandidateWorkers:
        if self.workers > 1:
            self.executor = worker_pool(self.workers, _adopt, (self.data,), preload=__name__)
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
            self.executor = None

    def cross_validate(self, candidates: list[Surrogate], data: SubsetData, folds: list[np.ndarray],
                       on_scored: Callable[[], object] = lambda: None) -> list[list[float]]:
        """Returns every candidate's per-fold scores on `data`'s fit rows, in candidate order;
        `on_scored()` is called (in this process) as each candidate's scores arrive."""
        if data.subset_ids is not self.data.subset_ids and not np.array_equal(data.subset_ids, self.data.subset_ids):
            raise ValueError("these workers serve other subsets than the data being cross-validated")
        scores = []
        if self.executor is None or len(candidates) < 2:
            with threadpool_limits(1, user_api="blas"):
                for candidate in candidates:
                    scores.append(cross_validate(candidate, data, data.fit_rows, folds))
                    on_scored()
            return scores
        for scored in self.executor.map(_cross_validate_adopted, candidates, repeat(data.fit_rows), repeat(folds)):
            scores.append(scored)
            on_scored()
        return scores


_ADOPTED: dict = {}


def _adopt(data: SubsetData) -> None:
    """Worker initialiser: keeps the data and limits BLAS to one thread for the worker's life."""
    _ADOPTED["data"], _ADOPTED["limits"] = data, threadpool_limits(1, user_api="blas")


def _cross_validate_adopted(candidate: Surrogate, fit_rows: np.ndarray, folds: list[np.ndarray]) -> list[float]:
    return cross_validate(candidate, _ADOPTED["data"], fit_rows, folds)


@dataclass
class CandidateScore:
    method: str
    candidate: int
    config: dict
    fold_scores: list[float]
    cv_mean: float
    cv_sd: float
    cv_lcb: float
    chosen: bool = False


def lcb(fold_scores: np.ndarray, n_candidates: int, delta: float) -> tuple[float, float, float]:
    """Returns (mean, sd, mean − z_{1−δ/|C|}·sd/√K) of per-fold scores (Bonferroni over C)."""
    scores = np.asarray(fold_scores, float)
    scores = np.where(np.isnan(scores), 0.0, scores)  # an undefined fold counts as no skill
    mean = float(scores.mean())
    sd = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
    z = stats.norm.ppf(1 - delta / n_candidates)
    return mean, sd, mean - z * sd / np.sqrt(len(scores))


def choose_by_lcb(candidates: list[Surrogate], data: SubsetData, params: SurrogateParams,
                  workers: CandidateWorkers | None = None) -> list[CandidateScore]:
    """Cross-validates every candidate on the fit rows only; marks the highest-LCB one chosen."""
    folds = stratified_folds(data.samplers, data.fit_rows, params.cv_folds, params.seed)
    method = candidates[0].method if candidates else "?"
    with progress.task(f"{method} candidates", total=len(candidates), unit="candidate") as done:
        fold_scores = (workers or CandidateWorkers(data)).cross_validate(candidates, data, folds, done.advance)
    results = []
    for index, (candidate, scores) in enumerate(zip(candidates, fold_scores)):
        mean, sd, bound = lcb(np.asarray(scores), len(candidates), params.delta)
        results.append(CandidateScore(candidate.method, index, candidate.config(), scores, mean, sd, bound))
    best = max(range(len(results)), key=lambda i: (results[i].cv_lcb, -i))
    results[best].chosen = True
    return results


@dataclass
class FittedMethod:
    method: str
    surrogate: Surrogate
    params: list[dict]  # per task
    predicted: np.ndarray  # (m, T), every subset
    candidates: list[CandidateScore]
    seconds: float = 0.0  # wall time of the choice (CV over candidates) and the final fit

    @property
    def chosen(self) -> CandidateScore:
        return next(c for c in self.candidates if c.chosen)


def fit_surrogates(data: SubsetData, params: SurrogateParams,
                   methods: tuple[str, ...] = ("grasp", "grad_dot", "trak", "datamodel", "size"),
                   workers: CandidateWorkers | None = None) -> dict[str, FittedMethod]:
    """Chooses each method's configuration by LCB, refits it on all fit rows, predicts all rows.

    `workers` (on the same subsets) spreads the cross-validation; without them it runs in
    `params.workers` processes started for this call.
    """
    if len(data.fit_rows) < params.cv_folds * 2:
        raise ValueError(f"{len(data.fit_rows)} fit subsets cannot support {params.cv_folds}-fold "
                         "cross-validation; plan at least 2 per fold")
    if workers is None:
        with CandidateWorkers(data, params.workers) as own:
            return fit_surrogates(data, params, methods, own)
    sets = candidate_sets(params, data.sketch_blocks)
    fitted = {}
    for method in methods:
        began = time.perf_counter()
        scores = choose_by_lcb(sets[method], data, params, workers)
        chosen = sets[method][next(c.candidate for c in scores if c.chosen)]
        with threadpool_limits(1, user_api="blas"):
            task_params, predicted = fit_all_tasks(chosen, data, data.fit_rows)
        fitted[method] = FittedMethod(method, chosen, task_params, predicted, scores,
                                      seconds=time.perf_counter() - began)
    return fitted

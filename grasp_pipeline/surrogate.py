"""Subset-level surrogates Û_t(S), fitted on `fit` subsets, chosen by a lower confidence bound.

GRASP (DESIGN §2):  Û_t(S) = a_t + s_t·φ(|S|) + b_t·⟨q_t, Z_S⟩ − ‖Z_S‖²_{C_t},
Z_S = N(|S|)·Σ_{i∈S} z_i, where C_t = c_t·H is the penalty geometry (c_t·I, or a learned
non-negative diagonal with ridge). b_t ≥ 0 and C_t ≥ 0 are the smoothness bound's signs,
enforced by non-negative least squares (scipy `nnls`, free terms projected out).

Baselines on the same subsets: `size` (a + s|S|), `grad_dot` (a + b Σ⟨q_t, z_i⟩, TracIn-like),
`trak` (a + b Σ q_tᵀ(ZᵀZ + λI)⁻¹z_i) and `datamodel` (ridge on 0/1 membership masks).

Sketches may hold one k-block per reference checkpoint (`SubsetData.sketch_blocks`); which
block a sketch method reads (`sketch_block`) is part of its candidate set, so each method
takes the checkpoint that predicts best on the fit subsets.

Configuration choice (LCB protocol): every method's candidates form a finite set declared
up front; K-fold CV over the `fit` subsets (folds stratified by sampler) gives per-fold
scores = mean over (sampler, task) of Spearman ρ on the held-out fold; the candidate with
the highest mean − z_{1−δ/|C|}·sd/√K wins. `holdout` subsets are never passed to any fit
or choice: every function here receives the fit rows explicitly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp
from scipy import stats
from scipy.optimize import nnls

from .metrics import nan_mean, pearson, spearman

NORMALISATIONS = {"none": lambda s: np.ones_like(s, float), "sqrt": lambda s: 1 / np.sqrt(s),
                  "mean": lambda s: 1 / s}
SIZE_TERMS = {"none": None, "linear": lambda s: s.astype(float), "log": lambda s: np.log(s)}


@dataclass
class SubsetData:
    """Everything a surrogate may see about the retrained subsets (all roles)."""

    subset_ids: np.ndarray  # (m,)
    roles: np.ndarray  # (m,) "fit" / "holdout"
    samplers: np.ndarray  # (m,)
    sizes: np.ndarray  # (m,)
    membership: sp.csr_matrix  # (m, n) 0/1 over pool rows
    utility: np.ndarray  # (m, T), mean over repeats
    pool_sketch: np.ndarray  # (n, k)
    task_sketch: np.ndarray  # (T, k)
    tasks: list[str]
    sketch_blocks: int = 1  # equal blocks the sketch columns form: one per reference checkpoint

    def __post_init__(self):
        if self.sketch_blocks < 1 or self.pool_sketch.shape[1] % self.sketch_blocks:
            raise ValueError(f"{self.pool_sketch.shape[1]} sketch columns do not split into {self.sketch_blocks} "
                             "equal checkpoint blocks")
        self.sum_z = np.asarray(self.membership @ self.pool_sketch.astype(np.float64))  # (m, k)
        self.cache: dict = {}  # derived matrices shared by folds and tasks (never holdout utilities)

    @property
    def fit_rows(self) -> np.ndarray:
        return np.flatnonzero(self.roles == "fit")

    @property
    def holdout_rows(self) -> np.ndarray:
        return np.flatnonzero(self.roles == "holdout")


class Surrogate(ABC):
    """One configuration of one method; `fit` sees only the rows it is given."""

    method: str

    @abstractmethod
    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        """Returns JSON-serialisable parameters in utility units."""

    @abstractmethod
    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        """Returns predicted utility for every subset (m,)."""

    def config(self) -> dict:
        return {"method": self.method}

    def range_params(self, data: SubsetData) -> dict:
        """Fitted-params entries naming the sketch columns used (none for sketch-free methods)."""
        return {}


def _bounded_least_squares(features: np.ndarray, target: np.ndarray, nonneg: np.ndarray,
                           ridge: np.ndarray) -> np.ndarray:
    """Solves min ‖Xβ − y‖² + Σ ridge_j β_j² with β_j ≥ 0 where nonneg_j; returns β.

    Columns and target are scaled to unit RMS first (positive scaling keeps the sign
    constraints), so ridge strengths mean the same thing for every feature.
    """
    col_scale = np.sqrt((features ** 2).mean(0))
    col_scale[col_scale == 0] = 1.0
    y_scale = np.sqrt((target ** 2).mean()) or 1.0
    x = features / col_scale
    y = target / y_scale
    if np.any(ridge > 0):
        penalised = np.flatnonzero(ridge > 0)
        extra = np.zeros((len(penalised), x.shape[1]))
        extra[np.arange(len(penalised)), penalised] = np.sqrt(ridge[penalised] * len(y))
        x, y = np.vstack([x, extra]), np.concatenate([y, np.zeros(len(penalised))])
    return _nonneg_with_free_columns(x, y, nonneg) / col_scale * y_scale


def _nonneg_with_free_columns(x: np.ndarray, y: np.ndarray, nonneg: np.ndarray) -> np.ndarray:
    """Solves min ‖xβ − y‖² with β ≥ 0 on the `nonneg` columns and the rest free.

    The free columns are projected out exactly (their optimum is a least-squares fit of the
    residual), which leaves a plain NNLS problem for Lawson–Hanson (`scipy.optimize.nnls`):
    ~100× faster than a general bounded solver on the diagonal-geometry fits.
    """
    free, bounded = ~nonneg, nonneg
    beta = np.zeros(x.shape[1])
    if not bounded.any():
        beta[:] = np.linalg.lstsq(x, y, rcond=None)[0]
        return beta
    basis = np.linalg.qr(x[:, free])[0] if free.any() else np.zeros((len(y), 0))
    project = lambda a: a - basis @ (basis.T @ a)  # noqa: E731 — residual after the free columns
    beta[bounded] = nnls(project(x[:, bounded]), project(y), maxiter=50 * x.shape[1])[0]
    if free.any():
        beta[free] = np.linalg.lstsq(x[:, free], y - x[:, bounded] @ beta[bounded], rcond=None)[0]
    return beta


def sketch_range(data: SubsetData, block: int, dim: int = 0) -> tuple[int, int]:
    """The [start, stop) sketch columns of checkpoint block `block` (-1 = every block), cut to
    their first `dim` columns when dim > 0."""
    width = data.pool_sketch.shape[1]
    if block == -1:
        start, stop = 0, width
    elif 0 <= block < data.sketch_blocks:
        size = width // data.sketch_blocks
        start, stop = block * size, (block + 1) * size
    else:
        raise ValueError(f"sketch_block {block} does not exist: the sketches have {data.sketch_blocks} "
                         "checkpoint block(s) (-1 = all)")
    return start, (min(stop, start + dim) if dim else stop)


class _OnSketchBlock:
    """Methods that read the sketches choose which checkpoint block (`sketch_block`) they use;
    the columns go into the fitted params as `sketch_range`, for selection and mixtures."""

    sketch_block: int = -1

    def columns(self, data: SubsetData) -> slice:
        return slice(*sketch_range(data, self.sketch_block, getattr(self, "sketch_dim", 0)))

    def range_params(self, data: SubsetData) -> dict:
        return {"sketch_range": list(sketch_range(data, self.sketch_block, getattr(self, "sketch_dim", 0)))}


@dataclass
class Grasp(_OnSketchBlock, Surrogate):
    """The interaction-aware surrogate of DESIGN §2 with one (φ, N, H, ridge, block, k') choice.

    `sketch_block` picks one reference checkpoint's block of sketch columns (-1: all of
    them, concatenated); `sketch_dim` k' > 0 then uses its first k' coordinates only: a
    prefix of a random projection is itself a (rescaled) random projection to k'
    dimensions, so one wide sketch serves every candidate dimension; 0 means all.
    """

    size_term: str = "log"  # none | linear | log
    normalisation: str = "mean"  # none | sqrt | mean
    geometry: str = "identity"  # identity | diagonal
    ridge: float = 1e-3
    sketch_dim: int = 0
    sketch_block: int = -1
    method: str = field(default="grasp", init=False)

    def features(self, data: SubsetData, task: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns (free columns [1, φ], alignment A_t (m,), penalty columns Q (m, 1|k'))."""
        free = [np.ones(len(data.sizes))]
        if SIZE_TERMS[self.size_term] is not None:
            free.append(SIZE_TERMS[self.size_term](data.sizes))
        dims = self.columns(data)
        z_s = data.sum_z[:, dims] * NORMALISATIONS[self.normalisation](data.sizes)[:, None]
        alignment = z_s @ data.task_sketch[task, dims]
        penalty = (z_s ** 2).sum(1, keepdims=True) if self.geometry == "identity" else z_s ** 2
        return np.column_stack(free), alignment, penalty

    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        free, alignment, penalty = self.features(data, task)
        x = np.column_stack([free, alignment, -penalty])[rows]
        n_free = free.shape[1]
        nonneg = np.arange(x.shape[1]) >= n_free
        # the ridge regularises the learned geometry H (DESIGN §2); a single identity weight
        # c needs none, and the alignment weight b is never shrunk
        ridge = np.where(nonneg, self.ridge if self.geometry == "diagonal" else 0.0, 0.0)
        ridge[n_free] = 0.0
        beta = _bounded_least_squares(x, data.utility[rows, task], nonneg, ridge)
        return {"intercept": float(beta[0]),
                "size_coef": float(beta[1]) if n_free == 2 else 0.0,
                "b": float(beta[n_free]), "penalty": beta[n_free + 1:].tolist(), **self.range_params(data),
                **self.config()}

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return grasp_subset_utility(params, data.sum_z, data.sizes, data.task_sketch[task])

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
    return params["intercept"] + size_part + params["b"] * (z_s @ np.asarray(task_sketch, float)[start:stop]) - quadratic


class _LinearOnScore(Surrogate):
    """a + b·score(S) by ordinary least squares, for additive baselines and size."""

    def score(self, data: SubsetData, task: int) -> np.ndarray:
        raise NotImplementedError

    def fit(self, data: SubsetData, rows: np.ndarray, task: int) -> dict:
        x = np.column_stack([np.ones(len(rows)), self.score(data, task)[rows]])
        beta = _bounded_least_squares(x, data.utility[rows, task], np.zeros(2, bool), np.zeros(2))
        return {"intercept": float(beta[0]), "slope": float(beta[1]), **self.range_params(data), **self.config()}

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return params["intercept"] + params["slope"] * self.score(data, task)


class SizeOnly(_LinearOnScore):
    method = "size"

    def score(self, data, task):
        return data.sizes.astype(float)


@dataclass
class GradDot(_OnSketchBlock, _LinearOnScore):
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
class Trak(_OnSketchBlock, _LinearOnScore):
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
        key = ("datamodel", rows.tobytes())
        if key not in data.cache:  # the centred masks and their Gram matrix serve every task and ridge
            x = data.membership[rows].toarray()
            x_mean = x.mean(0)
            xc = x - x_mean
            data.cache[key] = (x_mean, xc, xc @ xc.T)
        x_mean, xc, gram = data.cache[key]
        y = data.utility[rows, task]
        y_mean = y.mean()
        yc = y - y_mean
        # dual form: m_fit ≪ n_pool, so solve the (m × m) system
        alpha = np.linalg.solve(gram + self.ridge * np.eye(len(rows)), yc)
        weights = xc.T @ alpha
        return {"intercept": float(y_mean - x_mean @ weights), "weights": weights.tolist(), **self.config()}

    def predict(self, data: SubsetData, params: dict, task: int) -> np.ndarray:
        return params["intercept"] + data.membership @ np.asarray(params["weights"])

    def config(self):
        return {"method": "datamodel", "ridge": self.ridge}


@dataclass(frozen=True)
class SurrogateParams:
    """The finite candidate sets and the CV/LCB protocol settings."""

    cv_folds: int = 5
    delta: float = 0.1
    seed: int = 0
    grasp_size_terms: tuple[str, ...] = ("none", "linear", "log")
    grasp_normalisations: tuple[str, ...] = ("none", "sqrt", "mean")
    grasp_geometries: tuple[str, ...] = ("identity", "diagonal")
    grasp_ridges: tuple[float, ...] = (0.01, 0.1, 1.0)  # ridge on the learned diagonal H
    grasp_sketch_dims: tuple[int, ...] = (0,)  # sketch-dimension prefixes k' (0 = all k)
    # checkpoint blocks the sketch methods (grasp, grad_dot, trak) choose from; empty = each
    # block alone (every block when there is one); -1 = all blocks concatenated
    sketch_blocks: tuple[int, ...] = ()
    datamodel_ridges: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)
    trak_damping: float = 1e-3
    fidelity_fit_budgets: tuple[int, ...] = (16, 32, 64, 128)  # fidelity vs number of fit subsets


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
        scores += [spearman(predicted[mine, t], data.utility[mine, t]) for t in range(len(data.tasks))]
    return nan_mean(scores)


def fit_all_tasks(surrogate: Surrogate, data: SubsetData, rows: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Fits every task on `rows`; returns (params per task, predictions (m, T))."""
    params = [surrogate.fit(data, rows, t) for t in range(len(data.tasks))]
    predicted = np.column_stack([surrogate.predict(data, p, t) for t, p in enumerate(params)])
    return params, predicted


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


def choose_by_lcb(candidates: list[Surrogate], data: SubsetData, params: SurrogateParams) -> list[CandidateScore]:
    """Cross-validates every candidate on the fit rows only; marks the highest-LCB one chosen."""
    folds = stratified_folds(data.samplers, data.fit_rows, params.cv_folds, params.seed)
    results = []
    for index, candidate in enumerate(candidates):
        scores = []
        for held_out in folds:
            train = np.setdiff1d(data.fit_rows, held_out)
            _, predicted = fit_all_tasks(candidate, data, train)
            scores.append(fold_score(data, predicted, held_out))
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
                   methods: tuple[str, ...] = ("grasp", "grad_dot", "trak", "datamodel", "size")) -> dict[str, FittedMethod]:
    """Chooses each method's configuration by LCB, refits it on all fit rows, predicts all rows."""
    if len(data.fit_rows) < params.cv_folds * 2:
        raise ValueError(f"{len(data.fit_rows)} fit subsets cannot support {params.cv_folds}-fold "
                         "cross-validation; plan at least 2 per fold")
    sets = candidate_sets(params, data.sketch_blocks)
    fitted = {}
    for method in methods:
        began = time.perf_counter()
        scores = choose_by_lcb(sets[method], data, params)
        chosen = sets[method][next(c.candidate for c in scores if c.chosen)]
        task_params, predicted = fit_all_tasks(chosen, data, data.fit_rows)
        fitted[method] = FittedMethod(method, chosen, task_params, predicted, scores,
                                      seconds=time.perf_counter() - began)
    return fitted


def with_fit_budget(data: SubsetData, budget: int, seed: int) -> SubsetData:
    """Returns a copy of `data` that keeps only `budget` fit subsets (the rest become unused).

    The kept subsets are a seeded draw stratified by sampler, so every budget keeps the
    regimes' proportions; holdout rows are untouched.
    """
    rng = np.random.default_rng(seed)
    fit = data.fit_rows
    order = []
    for sampler in sorted(set(data.samplers[fit])):
        mine = rng.permutation(fit[data.samplers[fit] == sampler])
        order += [(i / len(mine), row) for i, row in enumerate(mine)]
    kept = [row for _, row in sorted(order)[:budget]]  # interleaved by rank within each sampler
    roles = np.where(data.roles == "fit", "unused", data.roles).astype(object)
    roles[kept] = "fit"
    return replace(data, roles=roles)


def fidelity_by_fit_budget(data: SubsetData, params: SurrogateParams, budgets,
                           methods: tuple[str, ...] = ("grasp", "grad_dot", "datamodel", "size")) -> list[dict]:
    """Returns holdout fidelity per (budget, method) when only `budget` fit subsets are used.

    Budgets at or above the number of fit subsets are skipped (that is the main fit); each
    budget repeats the whole protocol (LCB choice and fit) on its own fit rows.
    """
    rows = []
    for budget in sorted(b for b in budgets if params.cv_folds * 2 <= b < len(data.fit_rows)):
        restricted = with_fit_budget(data, budget, params.seed)
        for method, fitted in fit_surrogates(restricted, params, methods).items():
            report = holdout_fidelity(restricted, fitted.predicted)
            rows.append({"fit_subsets": budget, "method": method, "holdout_spearman": report["mean_spearman"],
                         **{f"holdout_spearman.{s}": v for s, v in report["per_sampler"].items()}})
    return rows


def holdout_fidelity(data: SubsetData, predicted: np.ndarray) -> dict:
    """Returns per-task and per-sampler holdout Spearman/Pearson for one method's predictions."""
    rows = data.holdout_rows
    per_task = {task: {"spearman": spearman(predicted[rows, t], data.utility[rows, t]),
                       "pearson": pearson(predicted[rows, t], data.utility[rows, t])}
                for t, task in enumerate(data.tasks)}
    per_sampler, per_sampler_pearson = {}, {}
    for sampler in sorted(set(data.samplers[rows])):
        mine = rows[data.samplers[rows] == sampler]
        per_sampler[sampler] = nan_mean(spearman(predicted[mine, t], data.utility[mine, t])
                                        for t in range(len(data.tasks)))
        per_sampler_pearson[sampler] = nan_mean(pearson(predicted[mine, t], data.utility[mine, t])
                                                for t in range(len(data.tasks)))
    return {"per_task": per_task, "per_sampler": per_sampler, "per_sampler_pearson": per_sampler_pearson,
            "mean_spearman": nan_mean(v["spearman"] for v in per_task.values()),
            "mean_pearson": nan_mean(v["pearson"] for v in per_task.values())}

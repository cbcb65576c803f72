"""Mixture-update stage: re-optimise the GRASP mixture after the domain set changed, without refitting the surrogate.

GRASP's surrogate parameters are per task, and the mixture objective needs only per-domain
sketch statistics (counts, means, variances; grasp_pipeline/mixture/objective.py). So when new
corpus files add or revise domains, the stored reference checkpoints and the projection that
gradient_sketches recorded sketch just those domains' pool examples and their tasks' dev
examples; unchanged domains keep their stored statistics, removed domains are dropped, and the
mixture is re-optimised as `mixture_weights` optimises it (`mixture_problem`, `optimise_mixture`).
The surrogate is not refitted (only a new task's two numbers, from the dev check below) and the
root's other tables are left as they are: the update is one new
table, `mixture_updates`.

The dev check: the optimum rests on a prior for new tasks and on sketches of new domains taken at
a θ₀ that never saw them, so it can land far from every fit subset's composition (on the demo it
lost 0.22 nats to natural on test). So a few candidates — natural, steps from natural toward the
optimum, the optimum, and the stored GRASP mixture carried over (Olmix's reuse) — are each
retrained `check_samples` times with the stored recipe and scored on the new corpus's dev tasks;
the pick has the best task-weighted mean dev gain over natural. That costs
len(candidates) × check_samples models (16 by default: a few percent of a full recomputation's
retraining) and never reads a test row; check_samples = 0 is the sketch-only update. With new
tasks and `refit_new_tasks` (off by default: on the demo its optimum lost more on dev than the
prior's), the check's samples then refit their b and intercept (`refit_prior_tasks`), and the
optimum under the refit (`refit_optimum`) is checked as well.

Which domains changed: the new corpus is read, cut and split with the stored run's corpus
settings. Each domain is split on its own (seeded by (seed, domain), split.py) and example ids
depend only on the document, so an unchanged domain gets exactly its stored pool and task set
back. A domain is new when corpus_shards has no rows of it, revised when the content_sha1 values
of its pool or of its dev task examples differ from the stored ones.

A task the surrogate never fitted (a new domain's) gets a prior: the cross-task mean (or median,
`mixture_update.new_task_prior`) of the fitted tasks' alignment weight b, penalty, intercept and
size coefficient. Why: it uses the fit only (no test rows, no refit); every task was fitted
on the same recipe and sketch space, so the scale of b and of the penalty is a property of the
recipe more than of one task, and the mean is the estimate that assumes nothing about which task
the new one resembles; the intercept and size term only shift the predicted utility at a fixed
budget and never move the argmax. A revised domain keeps its task's fitted params (the same
task; only its sketch q_t is recomputed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..config.params import CorpusParams, MixtureParams, MixtureUpdateParams
from ..infra.commits import fingerprint
from ..infra.storage import DeltaStore
from ..mixture import DomainStats, domain_stats, natural_mixture, optimise_mixture, sample_mixture
from ..mixture.objective import natural_over
from ..surrogates import grasp_subset_utility
from ..training.retrain import TrainJob, train_jobs
from ..workloads.base import Workload
from .base import StageResult, stage
from .corpus_shards import split_corpus
from .gradient_sketches import shard_sketches, stored_sketcher
from .mixture_weights import mixture_problem
from .tables import (
    method_params,
    outcome_recipe,
    pool_sketches,
    read_pool,
    read_tasks,
    sketch_matrix,
    target_caps,
    target_weights,
)
from .task_sketches import task_sketch_rows

# the tables an update reads, with the stage that writes each
REQUIRED_TABLES = {"corpus_shards": "corpus_shards", "task_sets": "corpus_shards",
                   "reference_models": "reference_model", "gradient_sketches": "gradient_sketches",
                   "task_sketches": "task_sketches", "surrogates": "surrogates",
                   "subset_outcomes": "subset_outcomes"}
PRIOR_KEYS = ("b", "penalty", "intercept", "size_coef")  # the per-task numbers of a grasp fit
UPDATE_ORDER_KEY = 50_000_000  # data-order key of the dev check's retrainings (the loop's is 40M, the test's its own)


@dataclass
class DomainUpdate:
    """What the mixture objective needs over the new corpus's domains and tasks, and how it was got."""

    stats: DomainStats  # per-domain counts, means, variances of the new pool's sketches
    tasks: list[str]  # sorted
    task_sketch: np.ndarray  # (T, k) q_t of each task
    grasp_params: list[dict]  # per task: the fitted params, or the prior for tasks the fit never saw
    surrogate_id: str
    model_version: str
    new_domains: list[str]
    revised_domains: list[str]
    removed_domains: list[str]
    prior_tasks: list[str]
    sketched_examples: int  # pool examples sketched (those of new and revised domains)
    sketched_task_examples: int  # dev task examples sketched
    corpus_sha1: str  # content hash of the new pool
    pool: pl.DataFrame  # the new corpus's pool, sorted by example_id (what the dev check samples from)
    dev: pl.DataFrame  # its dev task examples, sorted by task and example_id
    pool_sketch: np.ndarray  # (n, k) sketches of `pool`'s rows, in its order (stored or freshly sketched)


@dataclass
class DevCheck:
    """The candidates the dev check retrained and what it picked."""

    pick: str
    names: list[str]  # candidates in order (natural first)
    gains: list[float | None]  # task-weighted mean dev gain of each over natural (None: not retrained)
    retrained_models: int
    retrain_seconds: float
    subsets: list[list[np.ndarray]] | None = None  # pool rows of each candidate's samples
    utility: np.ndarray | None = None  # (candidates, samples, T) dev utility of each sample


@stage
def run_mixture_update(store: DeltaStore, workload: Workload, corpus: CorpusParams, example_bytes: int,
                       mixture: MixtureParams, params: MixtureUpdateParams) -> StageResult:
    """Re-optimises the GRASP mixture over the domains of `corpus.corpus_path` from the stored
    surrogate, sketching only new and revised domains, and picks between it and safer candidates by
    a few dev retrainings; writes `mixture_updates` (method grasp_update: the pick)."""
    began = time.perf_counter()
    update = domain_update(store, workload, corpus, example_bytes, params)
    objective, weights, caps, budget = mixture_problem(update.stats, update.task_sketch, update.grasp_params,
                                                       target_weights(store, update.tasks), mixture,
                                                       target_caps(store, update.stats.domains))
    candidates = update_candidates(update, optimise_mixture(objective, caps), stored_mixture(store), params)
    recipe = outcome_recipe(store.read("subset_outcomes"))
    check = dev_check(workload, recipe, update, candidates, weights, budget, params)
    if params.refit_new_tasks and update.prior_tasks and params.check_samples:
        refitted, *_ = mixture_problem(update.stats, update.task_sketch, refit_prior_tasks(update, check),
                                       target_weights(store, update.tasks), mixture,
                                       target_caps(store, update.stats.domains))
        candidates["refit_optimum"] = optimise_mixture(refitted, caps)
        check = dev_check(workload, recipe, update, candidates, weights, budget, params, earlier=check)
    pi = candidates[check.pick]
    seconds = time.perf_counter() - began
    mixture_id = f"{update.surrogate_id}-grasp_update-{update.corpus_sha1[:8]}"
    base = {"mixture_id": mixture_id, "method": "grasp_update", "predicted_utility": objective(pi),
            "natural_predicted_utility": objective(natural_mixture(update.stats)), "budget": budget,
            "new_domains": update.new_domains, "revised_domains": update.revised_domains,
            "removed_domains": update.removed_domains, "prior_tasks": update.prior_tasks,
            "sketched_examples": update.sketched_examples, "sketched_task_examples": update.sketched_task_examples,
            "candidate": check.pick, "candidates": check.names, "candidate_dev_gains": check.gains,
            "retrained_models": check.retrained_models, "retrain_seconds": check.retrain_seconds,
            "seconds": seconds, "corpus_content_sha1": update.corpus_sha1, "surrogate_id": update.surrogate_id,
            "model_version": update.model_version}
    rows = [{**base, "domain": domain, "weight": float(pi[d])} for d, domain in enumerate(update.stats.domains)]
    result = StageResult()
    result.write(store, "mixture_updates", pl.DataFrame(rows, schema=UPDATE_SCHEMA))
    result.metrics = {"sketched_examples": update.sketched_examples, "seconds": seconds,
                      "sketched_task_examples": update.sketched_task_examples,
                      "retrained_models": check.retrained_models, "retrain_seconds": check.retrain_seconds,
                      "new_domains": len(update.new_domains), "revised_domains": len(update.revised_domains),
                      "removed_domains": len(update.removed_domains), "predicted_utility.grasp_update": objective(pi),
                      **{f"dev_gain.{n}": g for n, g in zip(check.names, check.gains) if g is not None},
                      **{f"weight.grasp_update.{d}": float(w) for d, w in zip(update.stats.domains, pi)}}
    return result


def update_candidates(update: DomainUpdate, optimum: np.ndarray, stored: dict[str, float] | None,
                      params: MixtureUpdateParams) -> dict[str, np.ndarray]:
    """{name: π over update.stats.domains}: `natural`, `reuse` (the stored mixture carried over) when
    asked and stored, `step_s` for each mixture step s strictly between 0 and 1, and `optimum`. Why candidates at all:
    new tasks' params are a prior and new domains were sketched
    at a θ₀ that never saw them, so the optimum can extrapolate far from any fit subset (on the
    demo it lost 0.22 nats to natural); the check measures instead of trusting it."""
    natural = natural_mixture(update.stats)
    out = {"natural": natural}
    if params.reuse and stored is not None:
        out["reuse"] = reused_mixture(update, stored)
    for step in sorted(set(params.mixture_steps) - {0.0, 1.0}):
        out[f"step_{step:g}"] = (1 - step) * natural + step * optimum
    out["optimum"] = optimum
    return out


def stored_mixture(store: DeltaStore) -> dict[str, float] | None:
    """{domain: weight} of the root's GRASP mixture in mixture_weights (the loop's pick, `grasp`, else
    `grasp_optimum`), or None when it has none."""
    if not store.exists("mixture_weights"):
        return None
    weights = store.read("mixture_weights")
    for method in ("grasp", "grasp_optimum"):
        rows = weights.filter(pl.col("method") == method)
        if rows.height:
            return dict(zip(rows["domain"].to_list(), rows["weight"].to_list()))
    return None


def reused_mixture(update: DomainUpdate, stored: dict[str, float]) -> np.ndarray:
    """The stored mixture carried over to the new domain set (Olmix's reuse): unchanged domains keep
    its ratios, scaled to their natural total share; new and revised domains take their natural
    shares (the stored mixture knew nothing of them, or of what they are now)."""
    natural = natural_mixture(update.stats)
    fresh = set(update.new_domains) | set(update.revised_domains)
    kept = np.array([d not in fresh for d in update.stats.domains])
    old = np.array([stored.get(d, 0.0) if k else 0.0 for d, k in zip(update.stats.domains, kept)])
    if old.sum() <= 0:  # nothing of the stored mixture survives: natural is what is left of it
        return natural
    return np.where(kept, old / old.sum() * natural[kept].sum(), natural)


def dev_check(workload: Workload, recipe, update: DomainUpdate, candidates: dict[str, np.ndarray],
              weights: np.ndarray, budget: int, params: MixtureUpdateParams,
              earlier: DevCheck | None = None) -> DevCheck:
    """Retrains `params.check_samples` samples of every candidate with the stored recipe, scores them
    on the new corpus's dev tasks and picks the best task-weighted mean gain over natural (sample j
    of every candidate shares its seed, so the gains are paired); with check_samples 0 the optimum.
    `earlier` (a check of the first candidates) is kept: only the candidates after them are trained."""
    names = list(candidates)
    if params.check_samples == 0:
        return DevCheck("optimum", names, [None] * len(names), 0, 0.0)
    done = [] if earlier is None else earlier.names
    pool, dev = update.pool, update.dev
    domains = pool["domain"].to_numpy()
    samples = range(params.check_samples)
    subsets = [[sample_mixture(domains, candidates[name], update.stats.domains, budget, params.check_seed + j)
                for j in samples] for name in names[len(done):]]
    jobs = [TrainJob(rows, (params.check_seed + j, UPDATE_ORDER_KEY)) for per_name in subsets
            for j, rows in enumerate(per_name)]
    task_index = np.searchsorted(np.asarray(update.tasks), dev["task"].to_numpy())
    losses, seconds = train_jobs(workload, recipe, workload.encode(pool["text"].to_list()), jobs,
                                 workload.encode(dev["text"].to_list()), task_index, update.tasks,
                                 models_per_batch=params.models_per_batch, workers=params.workers,
                                 label="checking mixture candidates on dev")
    utility = -losses.reshape(len(subsets), params.check_samples, len(update.tasks))
    if earlier is not None:
        subsets, utility = earlier.subsets + subsets, np.concatenate([earlier.utility, utility])
        seconds = np.append(seconds, earlier.retrain_seconds)
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    gains = [float(((utility[i] - utility[0]).mean(axis=0) * w).sum()) for i in range(len(names))]
    pick = max(range(len(names)), key=lambda i: (gains[i], -i))
    return DevCheck(names[pick], names, gains, len(names) * params.check_samples, float(np.sum(seconds)),
                    subsets, utility)


def refit_prior_tasks(update: DomainUpdate, check: DevCheck) -> list[dict]:
    """Every task's params, the new tasks' alignment weight b (≥ 0) and intercept refitted by least squares
    on the dev check's retrained samples, their prior's penalty and size term kept. Why: the prior
    knows nothing of a new task (on the demo it sent the optimum to a 0.22-nat loss), while the check
    has just measured it on a few compositions; two numbers per task is what a few samples can fit."""
    rows = [r for per_name in check.subsets for r in per_name]
    sums = np.stack([update.pool_sketch[r].sum(0) for r in rows])
    sizes = np.array([len(r) for r in rows])
    utility = check.utility.reshape(len(rows), len(update.tasks))
    out = list(update.grasp_params)
    for t, task in enumerate(update.tasks):
        if task not in update.prior_tasks:
            continue
        prior, q = update.grasp_params[t], update.task_sketch[t]
        rest = grasp_subset_utility({**prior, "b": 0.0, "intercept": 0.0}, sums, sizes, q)
        alignment = grasp_subset_utility({**prior, "b": 1.0, "intercept": 0.0}, sums, sizes, q) - rest
        target = utility[:, t] - rest
        (intercept, b), *_ = np.linalg.lstsq(np.column_stack([np.ones(len(target)), alignment]), target, rcond=None)
        if b < 0:  # the smoothness bound's sign, as the fit's: no alignment at all
            intercept, b = float(target.mean()), 0.0
        out[t] = {**prior, "b": float(b), "intercept": float(intercept)}
    return out


UPDATE_SCHEMA = {"mixture_id": pl.Utf8, "method": pl.Utf8, "domain": pl.Utf8, "weight": pl.Float64,
                 "predicted_utility": pl.Float64, "natural_predicted_utility": pl.Float64, "budget": pl.Int64,
                 "new_domains": pl.List(pl.Utf8), "revised_domains": pl.List(pl.Utf8),
                 "removed_domains": pl.List(pl.Utf8), "prior_tasks": pl.List(pl.Utf8), "sketched_examples": pl.Int64,
                 "sketched_task_examples": pl.Int64, "candidate": pl.Utf8, "candidates": pl.List(pl.Utf8),
                 "candidate_dev_gains": pl.List(pl.Float64), "retrained_models": pl.Int64,
                 "retrain_seconds": pl.Float64, "seconds": pl.Float64, "corpus_content_sha1": pl.Utf8,
                 "surrogate_id": pl.Utf8, "model_version": pl.Utf8}


def domain_update(store: DeltaStore, workload: Workload, corpus: CorpusParams, example_bytes: int,
                  params: MixtureUpdateParams) -> DomainUpdate:
    """Returns the new corpus's domain statistics, task sketches and task params: stored ones for
    unchanged domains, freshly sketched ones (stored checkpoints and projection) for new and revised
    ones; ValueError naming what is missing when the root has no fitted surrogate or sketches."""
    check_root(store)
    surrogate_id, fitted_tasks, fitted = method_params(store, "grasp")
    version, sketcher = stored_sketcher(store, workload, params.chunk_size)
    stored_tasks = store.read("task_sketches").sort("task")
    if set(stored_tasks["model_version"].to_list()) != {version}:
        raise ValueError(f"task_sketches were computed at model(s) {sorted(set(stored_tasks['model_version']))}, "
                         f"the reference model is {version}; rematerialise task_sketches")
    pool, tasks_frame, *_ = split_corpus(corpus, example_bytes, workload)
    pool, dev = pool.sort("example_id"), tasks_frame.filter(pl.col("split") == "dev").sort("task", "example_id")
    new, revised, removed = changed_domains(read_pool(store), read_tasks(store, "dev")[0], pool, dev)
    fresh = new + revised
    kept = pool_sketches(store).filter(pl.col("domain").is_in(pool["domain"].unique().implode())
                                       & ~pl.col("domain").is_in(fresh))
    sketched = pool.filter(pl.col("domain").is_in(fresh))
    parts = [kept] + ([shard_sketches(sketcher, workload, sketched)] if sketched.height else [])
    # the new corpus's natural mixture, as its corpus stage would record it (corpus.natural)
    stats = merged_stats(parts, dict(pool.unique("domain").select("domain", "domain_natural").iter_rows()))
    fresh_dev = dev.filter(pl.col("task").is_in(fresh))
    names = sorted(fresh_dev["task"].unique().to_list())
    fresh_q = pl.DataFrame(task_sketch_rows(sketcher, workload, fresh_dev, names,
                                            np.searchsorted(np.asarray(names), fresh_dev["task"].to_numpy())),
                           schema={"task": pl.Utf8, "sketch": pl.List(pl.Float32), "loss": pl.Float64,
                                   "seconds": pl.Float64})
    tasks = sorted(dev["task"].unique().to_list())
    q = pl.concat([stored_tasks.filter(pl.col("task").is_in(tasks) & ~pl.col("task").is_in(fresh))
                   .select("task", "sketch"), fresh_q.select("task", "sketch")]).sort("task")
    if q["task"].to_list() != tasks:
        raise ValueError(f"task_sketches lacks task(s) {sorted(set(tasks) - set(q['task']))} of unchanged domains; "
                         "rematerialise task_sketches")
    by_task = dict(zip(fitted_tasks, fitted))
    prior = task_prior(fitted, params.new_task_prior)
    pool_sketch = pool.select("example_id").join(pl.concat([p.select("example_id", "sketch") for p in parts]),
                                                 on="example_id", how="left", maintain_order="left")["sketch"]
    return DomainUpdate(stats, tasks, sketch_matrix(q["sketch"]), [by_task.get(t, prior) for t in tasks],
                        surrogate_id, version, new, revised, removed, [t for t in tasks if t not in by_task],
                        sketched.height, fresh_dev.height, fingerprint(sorted(pool["content_sha1"].to_list())), pool,
                        dev, sketch_matrix(pool_sketch))


def check_root(store: DeltaStore) -> None:
    """Raises ValueError naming the missing tables (and the stages that write them) when the root
    lacks what an update reads: a fitted surrogate, sketches, the reference model, the corpus."""
    missing = [table for table in REQUIRED_TABLES if not store.exists(table)]
    if missing:
        stages = sorted({REQUIRED_TABLES[t] for t in missing})
        raise ValueError(f"mixture_update needs a root the pipeline ran on up to the surrogate; {store.root} has no "
                         f"{', '.join(missing)} table; materialise {', '.join(stages)} first (e.g. `grasp run`)")


def changed_domains(stored_pool: pl.DataFrame, stored_dev: pl.DataFrame, pool: pl.DataFrame,
                    dev: pl.DataFrame) -> tuple[list[str], list[str], list[str]]:
    """Returns (new, revised, removed) domains, each sorted: revised = in both, with other pool or
    dev-task content (the content_sha1 values, counted with multiplicity)."""
    def content(frame: pl.DataFrame, column: str) -> dict[str, list[str]]:
        return dict(frame.group_by(column).agg(pl.col("content_sha1").sort()).iter_rows())

    old_pool, new_pool = content(stored_pool, "domain"), content(pool, "domain")
    old_dev, new_dev = content(stored_dev, "task"), content(dev, "task")
    both = set(old_pool) & set(new_pool)
    revised = [d for d in sorted(both) if old_pool[d] != new_pool[d] or old_dev.get(d) != new_dev.get(d)]
    return sorted(set(new_pool) - set(old_pool)), revised, sorted(set(old_pool) - set(new_pool))


def merged_stats(parts: list[pl.DataFrame], natural: dict[str, float] | None = None) -> DomainStats:
    """Returns the DomainStats of gradient_sketches-like frames (each sorted by example_id, no domain
    in two frames), domains sorted: each domain's numbers are exactly those of its own frame; `natural`
    is the natural mixture's weight of each domain (domain_stats)."""
    found = [domain_stats(sketch_matrix(p["sketch"]), p["domain"].to_numpy()) for p in parts if p.height]
    by_domain = {d: (s.counts[i], s.means[i], s.variances[i]) for s in found for i, d in enumerate(s.domains)}
    names = sorted(by_domain)
    return DomainStats(names, np.array([by_domain[d][0] for d in names]),
                       np.stack([by_domain[d][1] for d in names]), np.stack([by_domain[d][2] for d in names]),
                       natural_over(natural, names))


def task_prior(fitted: list[dict], how: str) -> dict:
    """Returns grasp params for a task the fit never saw: the fitted tasks' shared settings
    (normalisation, size term, sketch range, …) with the cross-task `how` ("mean" or "median") of
    each per-task number (b, penalty elementwise, intercept, size coefficient)."""
    reduce = {"mean": np.mean, "median": np.median}.get(how)
    if reduce is None:
        raise ValueError(f"mixture_update.new_task_prior must be 'mean' or 'median', not {how!r}")
    per_task = PRIOR_KEYS + tuple(k for k in ("fit_utility_std",) if k in fitted[0])  # (selection's task scale)
    prior = {k: v for k, v in fitted[0].items() if k not in per_task}
    for key in per_task:
        values = np.asarray([p[key] for p in fitted], dtype=np.float64)
        prior[key] = reduce(values, axis=0).tolist()
    return prior

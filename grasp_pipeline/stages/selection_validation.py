"""Validation stage: every selection and a sample of every mixture retrained at the same budget."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import ValidationParams
from ..evaluation.comparison import selection_comparison
from ..evaluation.verdict import VERDICT_SCHEMA, loop_budgets, utilities_by_method, verdict_frame
from ..infra.storage import DeltaStore
from ..mixture import sample_mixture
from ..selection import random_selection
from ..training.retrain import TrainJob, train_jobs
from ..workloads.base import Workload
from .base import StageResult, stage
from .figures import utility_figure
from .tables import encoded_pool_and_tasks, natural_weights, outcome_recipe, target_weights


def check_same_surrogate(selection_ids: pl.Series, mixture_ids: pl.Series) -> None:
    """ValueError naming both surrogates when the selections and the mixtures validated together were
    made from different surrogate fits (ids are `<surrogate_id>-<method>`)."""
    def surrogate(ids):
        return sorted(ids.str.extract(r"^(sg-[0-9a-f]+)-", 1).drop_nulls().unique().to_list())
    made_from = {"curated_selections": surrogate(selection_ids), "mixture_weights": surrogate(mixture_ids)}
    if len({s for found in made_from.values() for s in found}) > 1:
        raise ValueError(f"curated_selections and mixture_weights come from different surrogates ({made_from}); "
                         "rerun curated_selection and mixture_weights from the current surrogates")


@stage
def run_selection_validation(store: DeltaStore, workload: Workload,
                             params: ValidationParams = ValidationParams()) -> StageResult:
    """Retrains the outcome recipe on every selection, on `validation.random_seeds` random selections
    and on `mixture_samples` samples of every mixture, at the same budget; writes `selection_validation`
    (utility averaged over `repeats` data orders, or a mixture's samples) and `validation_verdict` (the
    curation test's statistics on dev: evaluation/verdict.py).

    Outcomes whose batches disagree on the recipe (or workload) are refused before anything is
    trained or written (`outcome_recipe`).

    Every selection trains with the same data-order seeds (common random numbers), so the
    differences between methods are not differences between seeds; mixture sample j (seed
    `mixture_seed` + j) trains with data order j mod repeats, as every other mixture's sample j does.
    """
    recipe = outcome_recipe(store.read("subset_outcomes"))
    pool, pool_inputs, task_inputs, names, task_index = encoded_pool_and_tasks(store, workload, "dev")
    groups, references, mixtures = _validation_groups(store, pool, params)
    everything = groups + references
    jobs = [TrainJob(g[3], (recipe.data_order_seed + repeat, 10_000_000))
            for repeat in range(params.repeats) for g in everything]
    jobs += [TrainJob(samples[j], (recipe.data_order_seed + j % params.repeats, 10_000_000))
             for j in range(params.mixture_samples) for _, _, _, samples in mixtures]
    per_job, _ = train_jobs(workload, recipe, pool_inputs, jobs, task_inputs, task_index, names,
                            models_per_batch=params.models_per_batch, workers=params.workers,
                            label="retraining selections", unit="selection")
    utility = -per_job[:params.repeats * len(everything)].reshape(params.repeats, len(everything), len(names))
    mixture_utility = -per_job[params.repeats * len(everything):].reshape(params.mixture_samples, len(mixtures),
                                                                          len(names))
    means = np.concatenate([utility[:, :len(groups)].mean(axis=0), mixture_utility.mean(axis=0)])
    reported = ([(*g[:3], params.repeats) for g in groups]
                + [(mid, f"mixture-{method}", budget, params.mixture_samples) for mid, method, budget, _ in mixtures])
    rows = [{"selection_id": sid, "method": method, "task": task, "loss": -float(means[j, t]),
             "utility": float(means[j, t]), "budget": budget, "repeats": repeats}
            for j, (sid, method, budget, repeats) in enumerate(reported) for t, task in enumerate(names)]
    frame = pl.DataFrame(rows, schema_overrides={"budget": pl.Int64, "repeats": pl.Int64})
    result = StageResult()
    result.write(store, "selection_validation", frame)
    result.write(store, "validation_verdict", _dev_verdict(store, groups, utility, mixtures, mixture_utility,
                                                           len(references), params, names))
    by_method = frame.group_by("method").agg(pl.col("utility").mean()).sort("method")
    result.metrics = {f"utility.{m}": u for m, u in by_method.iter_rows()}
    result.metrics.update(selection_comparison(frame))
    result.figures["utility_per_task.png"] = utility_figure(frame)
    return result


def _validation_groups(store: DeltaStore, pool: pl.DataFrame, params: ValidationParams):
    """([(selection_id, method, budget, pool rows)] of curated_selections, the same for the random
    references at the selection budget, [(mixture_id, method, budget, [rows of sample j])])."""
    selections = store.read("curated_selections").sort("selection_id", "rank")
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    grouped = selections.group_by("selection_id", "method", "budget", maintain_order=True).agg("example_id")
    groups = [(sid, method, budget, np.array([position[e] for e in ids]))
              for sid, method, budget, ids in grouped.iter_rows()]
    budgets = sorted({budget for _, method, budget, _ in groups if method != "full"})
    natural, domains = natural_weights(store), pool["domain"].to_numpy()
    references = [(f"dev-random-{seed}", f"dev-random-{seed}", budgets[0],
                   random_selection(pool.height, budgets[0], seed, domains=domains, natural=natural).rows)
                  for seed in params.random_seeds] if len(budgets) == 1 else []
    mixtures = []
    if store.exists("mixture_weights"):
        domains = pool["domain"].to_numpy()
        weights = store.read("mixture_weights").sort("mixture_id", "domain")
        check_same_surrogate(selections["selection_id"], weights["mixture_id"])
        for (mixture_id, method, budget), rows_ in weights.group_by("mixture_id", "method", "budget",
                                                                    maintain_order=True):
            mixtures.append((mixture_id, method, budget, [
                sample_mixture(domains, rows_["weight"].to_numpy(), rows_["domain"].to_list(), budget,
                               params.mixture_seed + j) for j in range(params.mixture_samples)]))
    return groups, references, mixtures


def _dev_verdict(store: DeltaStore, groups: list, utility: np.ndarray, mixtures: list, mixture_utility: np.ndarray,
                 references: int, params: ValidationParams, tasks: list[str]) -> pl.DataFrame:
    """The verdict on dev (evaluation/verdict.py), weighted by the loop's target: seeds are the `repeats`
    data orders; empty without three random references (validation.random_seeds) or with selections at
    several budgets."""
    if references < 3:
        return pl.DataFrame(schema=VERDICT_SCHEMA)
    per_selection = {j: utility[:, j] for j in range(utility.shape[1])}  # (S, T) each
    methods = utilities_by_method([(j, method) for j, (_, method, _, _) in enumerate(groups)],
                                  per_selection.__getitem__)
    randoms = np.stack([per_selection[len(groups) + r] for r in range(references)])
    mixed = {method: mixture_utility[:, m] for m, (_, method, _, _) in enumerate(mixtures)} \
        if params.mixture_samples >= 2 else {}
    rounds = store.read("curation_rounds") if store.exists("curation_rounds") else None
    return verdict_frame("dev", methods, randoms, mixed, budgets=loop_budgets(rounds), level=0.95,
                         weights=target_weights(store, tasks))

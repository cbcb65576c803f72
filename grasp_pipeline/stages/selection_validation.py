"""Validation stage: every selection and a sample of every mixture retrained at the same budget."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import ValidationParams
from ..evaluation.comparison import selection_comparison
from ..infra.storage import DeltaStore
from ..mixture import sample_mixture
from ..training.retrain import TrainJob, train_jobs
from ..workloads.base import Workload
from .base import StageResult, stage
from .figures import utility_figure
from .tables import encoded_pool_and_tasks, outcome_recipe


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
    """Retrains the outcome recipe on every selection and on a sample of every mixture, at the
    same budget; writes `selection_validation` (utility averaged over `repeats` data orders).

    Outcomes whose batches disagree on the recipe (or workload) are refused before anything is
    trained or written (`outcome_recipe`).

    Every selection trains with the same data-order seeds (common random numbers), so the
    differences between methods are not differences between seeds.
    """
    recipe = outcome_recipe(store.read("subset_outcomes"))
    pool, pool_inputs, task_inputs, names, task_index = encoded_pool_and_tasks(store, workload, "dev")
    selections = store.read("curated_selections").sort("selection_id", "rank")
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    grouped = selections.group_by("selection_id", "method", "budget", maintain_order=True).agg("example_id")
    groups = [(sid, method, budget, np.array([position[e] for e in ids]))
              for sid, method, budget, ids in grouped.iter_rows()]
    if store.exists("mixture_weights"):
        domains = pool["domain"].to_numpy()
        mixtures = store.read("mixture_weights").sort("mixture_id", "domain")
        check_same_surrogate(selections["selection_id"], mixtures["mixture_id"])
        for (mixture_id, method, budget), rows_ in mixtures.group_by("mixture_id", "method", "budget",
                                                                     maintain_order=True):
            drawn = sample_mixture(domains, rows_["weight"].to_numpy(), rows_["domain"].to_list(), budget,
                                   params.mixture_seed)
            groups.append((mixture_id, f"mixture-{method}", budget, drawn))
    jobs = [TrainJob(g[3], (recipe.data_order_seed + repeat, 10_000_000))
            for repeat in range(params.repeats) for g in groups]
    per_job, _ = train_jobs(workload, recipe, pool_inputs, jobs, task_inputs, task_index, names,
                            models_per_batch=params.models_per_batch, workers=params.workers,
                            label="retraining selections", unit="selection")
    losses = per_job.reshape(params.repeats, len(groups), len(names)).mean(axis=0)
    rows = [{"selection_id": sid, "method": method, "task": task, "loss": float(losses[j, t]),
             "utility": -float(losses[j, t]), "budget": budget, "repeats": params.repeats}
            for j, (sid, method, budget, _) in enumerate(groups) for t, task in enumerate(names)]
    frame = pl.DataFrame(rows, schema_overrides={"budget": pl.Int64, "repeats": pl.Int64})
    result = StageResult()
    result.write(store, "selection_validation", frame)
    means = frame.group_by("method").agg(pl.col("utility").mean()).sort("method")
    result.metrics = {f"utility.{m}": u for m, u in means.iter_rows()}
    result.metrics.update(selection_comparison(frame))
    result.figures["utility_per_task.png"] = utility_figure(frame)
    return result

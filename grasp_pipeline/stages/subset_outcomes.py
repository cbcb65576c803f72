"""Subset-outcomes stage: what retraining the recipe on each planned subset gave (`subset_outcomes`)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl

from ..config.params import RetrainParams
from ..evaluation.fidelity import noise_ceilings
from ..infra.storage import DeltaStore
from ..training.retrain import Recipe, retrain_subsets
from ..workloads.base import Workload
from .base import StageResult, refuse_non_finite, stage
from .tables import encoded_pool_and_tasks, members_digest, select_partitions


@stage
def run_subset_outcomes(store: DeltaStore, workload: Workload, params: RetrainParams,
                        batches: list[str] | None = None) -> StageResult:
    """Retrains the recipe on planned subsets; writes `subset_outcomes` (one row per task).

    With `batches` (retraining-batch keys of subset_plan), only those batches are trained
    and exactly their partitions are replaced; otherwise every batch, replacing the table.
    """
    pool, pool_inputs, task_inputs, names, task_index = encoded_pool_and_tasks(store, workload, "dev")
    full_plan = store.read("subset_plan").sort("subset_id")
    plan = select_partitions(full_plan, "batch", batches, "subset_plan")
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    subsets, holdout = [], set(plan.filter(pl.col("role") == "holdout")["subset_id"].to_list())
    for subset_id, members in plan.select("subset_id", "members").iter_rows():
        missing = [m for m in members if m not in position]
        if missing:
            raise ValueError(f"subset_plan subset {subset_id} names example_id {missing[0]} that is not in "
                             "corpus_shards; rematerialise subset_plan after corpus_shards")
        subsets.append((subset_id, np.array([position[m] for m in members])))
    recipe = Recipe.from_params(params)
    # holdout subsets only report fidelity: retraining them more often measures the noise
    # ceiling and steadies the targets at a fraction of the cost of repeating every subset
    outcomes = []
    # two loops, two progress labels: a log showing "retraining: done, 144/144" twice said nothing of which
    for role, chosen, repeats in (("fit", [s for s in subsets if s[0] not in holdout], params.repeats),
                                  ("holdout", [s for s in subsets if s[0] in holdout],
                                   max(params.repeats, params.holdout_repeats))):
        if chosen:
            outcomes += retrain_subsets(workload, recipe, pool_inputs, chosen, task_inputs, task_index, names,
                                        repeats=repeats, models_per_batch=params.models_per_batch,
                                        workers=params.workers, compile=params.compile,
                                        label=f"retraining {role} subsets")
    outcomes.sort(key=lambda o: (o.repeat, o.subset_id))
    batch_of = dict(plan.select("subset_id", "batch").iter_rows())
    members_of = dict(plan.select("subset_id", "members").iter_rows())
    recipe_json = json.dumps({**recipe.to_dict(), **workload.config()}, sort_keys=True)
    rows = [{"subset_id": o.subset_id, "task": task, "loss": float(o.task_loss[t]),
             "utility": -float(o.task_loss[t]), "repeat": o.repeat, "steps": recipe.steps,
             "seconds": o.seconds, "batch": batch_of[o.subset_id], "recipe": recipe_json,
             "members_sha1": members_digest(members_of[o.subset_id])}
            for o in outcomes for t, task in enumerate(names)]
    frame = pl.DataFrame(rows, schema_overrides={"subset_id": pl.Int64, "repeat": pl.Int64, "steps": pl.Int64})
    refuse_non_finite("subset_outcomes", frame, ["loss", "utility"], ["subset_id", "task", "batch"],
                      f"retraining diverged: lower retrain.lr (now {params.lr!r}) or retrain.steps "
                      f"(now {params.steps})")
    result = StageResult()
    if batches is None:
        result.write(store, "subset_outcomes", frame)
    else:
        # batches the plan no longer has (another corpus's plan) go in the same commit
        result.write_partitions(store, "subset_outcomes", frame, current=full_plan["batch"].unique().to_list())
    result.metrics = {"subsets": len(subsets), "rows": frame.height, "batches": frame["batch"].n_unique(),
                      "seconds_per_subset": float(np.mean([o.seconds for o in outcomes])),
                      **noise_ceilings(store.read("subset_outcomes"), full_plan)}
    return result

"""Subset-plan stage: which subsets of the pool to retrain on (`subset_plan`)."""

from __future__ import annotations

from ..config.params import PlanParams
from ..infra.storage import DeltaStore
from ..training.plan import sample_subset_plan
from .base import StageResult, stage


@stage
def run_subset_plan(store: DeltaStore, params: PlanParams) -> StageResult:
    """Samples the subsets to retrain on (samplers, fit/holdout roles, batches); writes `subset_plan`."""
    plan = sample_subset_plan(store.read("corpus_shards", columns=["example_id", "domain"]), params)
    result = StageResult()
    result.write(store, "subset_plan", plan)
    counts = plan.group_by("sampler", "role").len().sort("sampler", "role")
    result.metrics = {f"subsets.{s}.{r}": n for s, r, n in counts.iter_rows()}
    result.metrics["mean_size"] = float(plan["size"].mean())
    return result

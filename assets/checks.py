"""Asset checks guarding the science and the table contract (logic lives in the library)."""

import dagster as dg
from pydantic import Field

from grasp_pipeline.evaluation import checks
from grasp_pipeline.evaluation.verdict_report import HEADLINES, read_verdict

from .materialize import plain
from .resources import GraspStorage


def _result(outcome: tuple[bool, dict], severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    passed, facts = outcome
    return dg.AssetCheckResult(passed=bool(passed), severity=severity,
                               metadata={k: plain(v) for k, v in facts.items()})


@dg.asset_check(asset="gradient_sketches", blocking=True)
def gradient_sketches_finite(storage: GraspStorage) -> dg.AssetCheckResult:
    """No NaN or infinite sketch or loss (a surrogate fitted on them would be meaningless)."""
    return _result(checks.sketches_are_finite(storage.store(), "gradient_sketches"))


@dg.asset_check(asset="task_sketches", blocking=True)
def task_sketches_finite(storage: GraspStorage) -> dg.AssetCheckResult:
    """No NaN or infinite task sketch or loss."""
    return _result(checks.sketches_are_finite(storage.store(), "task_sketches"))


@dg.asset_check(asset="subset_outcomes", blocking=True)
def outcomes_complete(context: dg.AssetCheckExecutionContext, storage: GraspStorage) -> dg.AssetCheckResult:
    """Every planned subset of the batches this run retrained has an outcome for every task."""
    return _result(checks.outcomes_complete(storage.store(), batches_of_run(context)))


def batches_of_run(context: dg.AssetCheckExecutionContext) -> list[str] | None:
    """The retraining batches (partitions of subset_outcomes) the run targets; None = all."""
    tags = context.run.tags
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start is None or end is None:
        return None
    keys = context.instance.get_dynamic_partitions("retraining_batches")
    if start not in keys or end not in keys:
        return None
    return keys[keys.index(start):keys.index(end) + 1]


class FidelityFloorConfig(dg.Config):
    floor: float = Field(default=0.0, description="Minimum mean holdout Spearman ρ of grasp.")


@dg.asset_check(asset="surrogates")
def grasp_holdout_fidelity(config: FidelityFloorConfig, storage: GraspStorage) -> dg.AssetCheckResult:
    """GRASP's mean holdout Spearman ρ is above the configured floor."""
    return _result(checks.holdout_fidelity_above(storage.store(), config.floor))


@dg.asset_check(asset="surrogates")
def grasp_not_below_grad_dot(storage: GraspStorage) -> dg.AssetCheckResult:
    """GRASP is not worse than the additive gradient-dot baseline by more than noise (warning)."""
    return _result(checks.grasp_not_below_grad_dot(storage.store()), severity=dg.AssetCheckSeverity.WARN)


@dg.asset_check(asset="curated_selections")
def selection_size_equals_budget(storage: GraspStorage) -> dg.AssetCheckResult:
    """Every selection holds exactly its budget of distinct examples."""
    return _result(checks.selection_sizes_match_budget(storage.store()))


@dg.asset_check(asset="mixture_weights")
def mixture_weights_sum_to_one(storage: GraspStorage) -> dg.AssetCheckResult:
    """Every mixture is a point of the simplex."""
    return _result(checks.mixture_weights_sum_to_one(storage.store()))


def verdict_check(method: str, reference: str, claim: str) -> dg.AssetChecksDefinition:
    """A WARN check on `curation_test` stating `claim`: it passes only when the held-out difference
    `method` − `reference` (curation_test_verdict) has its whole interval above zero."""
    side = "mixture" if method.startswith("mixture-") else "selection"
    name = f"{method.removeprefix('mixture-')}_{side}_beats_{reference.removeprefix('mixture-')}"

    @dg.asset_check(asset="curation_test", name=name, description=f"{claim}: the held-out difference "
                    f"{method} − {reference} (curation_test_verdict) has its 95% interval above zero.")
    def _check(storage: GraspStorage) -> dg.AssetCheckResult:
        verdict = read_verdict(storage.store(), "curation_test_verdict")
        passed, facts = (verdict.claim(method, reference) if verdict is not None else
                         (False, {"measured": False, "why": "curation_test_verdict is missing or empty"}))
        words = (f"{claim}: {facts['gain']:+.4f} [{facts['ci_low']:+.4f}, {facts['ci_high']:+.4f}]" if passed else
                 f"not shown that {claim}: {facts['gain']:+.4f} [{facts['ci_low']:+.4f}, {facts['ci_high']:+.4f}] is "
                 f"{facts['verdict']}" if facts["measured"] else f"not measured: {facts['why']}")
        result = _result((passed, facts), severity=dg.AssetCheckSeverity.WARN)
        return dg.AssetCheckResult(passed=result.passed, severity=result.severity, description=words,
                                   metadata=result.metadata)

    return _check


verdict_checks = [verdict_check(method, reference, claim) for method, reference, claim in HEADLINES]

all_checks = [gradient_sketches_finite, task_sketches_finite, outcomes_complete, grasp_holdout_fidelity,
              grasp_not_below_grad_dot, selection_size_equals_budget,
              mixture_weights_sum_to_one, *verdict_checks]

"""Contract and science checks over the tables; each returns (passed, facts for display)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..infra.storage import DeltaStore


def sketches_are_finite(store: DeltaStore, table: str) -> tuple[bool, dict]:
    """Every sketch value in `table` (gradient_sketches or task_sketches) is finite."""
    frame = store.read(table)
    values = frame.select(pl.col("sketch").explode())["sketch"].to_numpy()
    bad = int((~np.isfinite(values)).sum()) + int((~np.isfinite(frame["loss"].to_numpy())).sum())
    return bad == 0, {"non_finite_values": bad, "rows": frame.height}


def outcomes_complete(store: DeltaStore, batches: list[str] | None = None) -> tuple[bool, dict]:
    """Every planned subset (of `batches`, default all) has an outcome for every task.

    A run that retrains some batches checks those: other batches may be running elsewhere
    at the same time (one run per batch on Celery or Kubernetes). The surrogate refuses to
    fit while any planned subset lacks outcomes, so completeness of the whole plan is still
    enforced before anything downstream uses them.
    """
    plan = store.read("subset_plan")
    if batches is not None:
        plan = plan.filter(pl.col("batch").is_in(batches))
    plan = plan.select("subset_id")
    outcomes = store.read("subset_outcomes")
    tasks = store.read("task_sets")["task"].unique()
    expected = plan.join(pl.DataFrame({"task": tasks}), how="cross")
    missing = expected.join(outcomes.select("subset_id", "task").unique(), on=["subset_id", "task"], how="anti")
    return missing.height == 0, {"expected_pairs": expected.height, "missing_pairs": missing.height,
                                 "first_missing": str(missing.head(3).to_dicts()),
                                 "batches": "all" if batches is None else ",".join(batches)}


def holdout_fidelity_above(store: DeltaStore, floor: float, method: str = "grasp") -> tuple[bool, dict]:
    """Mean over tasks of the method's holdout Spearman ρ is at least `floor`.

    Tasks without a ρ (NaN) are skipped; with none left the mean is NaN and the check fails.
    """
    rows = store.read("surrogates").filter(pl.col("method") == method)
    mean = rows["holdout_spearman"].fill_nan(None).mean()  # None when no task has a value; 0.0 is a value
    value = float("nan") if mean is None else float(mean)
    return bool(value >= floor), {"mean_holdout_spearman": value, "floor": floor}


def selection_sizes_match_budget(store: DeltaStore) -> tuple[bool, dict]:
    """Every selection holds exactly `budget` distinct examples."""
    sizes = (store.read("curated_selections").group_by("selection_id")
             .agg(pl.col("example_id").n_unique().alias("size"), pl.col("budget").first()))
    wrong = sizes.filter(pl.col("size") != pl.col("budget"))
    return wrong.height == 0, {"selections": sizes.height, "wrong_size": str(wrong.to_dicts())}


def mixture_weights_sum_to_one(store: DeltaStore, tolerance: float = 1e-6) -> tuple[bool, dict]:
    """Each mixture's weights are non-negative and sum to 1."""
    sums = store.read("mixture_weights").group_by("mixture_id").agg(
        pl.col("weight").sum().alias("total"), pl.col("weight").min().alias("smallest"))
    bad = sums.filter(((pl.col("total") - 1).abs() > tolerance) | (pl.col("smallest") < 0))
    return bad.height == 0, {"mixtures": sums.height, "bad": str(bad.to_dicts())}


def grasp_not_below_grad_dot(store: DeltaStore, z: float = 1.96) -> tuple[bool, dict]:
    """GRASP's mean holdout Spearman ρ is not below grad_dot's by more than noise.

    Noise is the paired standard error of the per-task differences (z = 1.96 by default).
    """
    surrogates = store.read("surrogates").filter(pl.col("method").is_in(["grasp", "grad_dot"]))
    wide = surrogates.pivot(on="method", index="task", values="holdout_spearman").drop_nans().drop_nulls()
    differences = (wide["grasp"] - wide["grad_dot"]).to_numpy()
    if len(differences) == 0:
        return True, {"tasks_compared": 0}
    margin = z * differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else 0.0
    mean = float(differences.mean())
    return bool(mean >= -margin), {"mean_difference": mean, "noise_margin": float(margin),
                                   "tasks_compared": len(differences)}

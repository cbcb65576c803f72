"""Counterfactual subset fidelity: holdout rank correlation per task and regime, by fit budget,
next to each regime's noise ceiling (DESIGN §6)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl

from ..config.params import SurrogateParams
from ..infra import progress
from ..stats import nan_mean, nan_median, noise_ceiling, pearson, spearman
from ..surrogates.data import SubsetData
from ..surrogates.lcb import CandidateWorkers, fit_surrogates


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
                           methods: tuple[str, ...] = ("grasp", "grad_dot", "datamodel", "size"),
                           workers: CandidateWorkers | None = None) -> list[dict]:
    """Returns holdout fidelity per (budget, method) when only `budget` fit subsets are used.

    Budgets at or above the number of fit subsets are skipped (that is the main fit); each
    budget repeats the whole protocol (LCB choice and fit) on `params.fidelity_draws` seeded
    draws of its fit rows and reports the median over draws (`draws_summary`), its
    cross-validation spread over `workers` (on `data`'s subsets; default: `params.workers`).
    """
    if workers is None:
        with CandidateWorkers(data, params.workers) as own:
            return fidelity_by_fit_budget(data, params, budgets, methods, own)
    rows = []
    kept = sorted(b for b in budgets if params.cv_folds * 2 <= b < len(data.fit_rows))
    with progress.task("fidelity by fit budget", total=len(kept) * params.fidelity_draws, unit="draw") as done:
        for budget in kept:
            reports: dict[str, list[dict]] = {}
            for restricted in budget_draws(data, budget, params.seed, params.fidelity_draws):
                for method, fitted in fit_surrogates(restricted, params, methods, workers).items():
                    reports.setdefault(method, []).append(holdout_fidelity(restricted, fitted.predicted))
                done.advance()
            rows += [{"fit_subsets": budget, "method": method, **draws_summary(mine)}
                     for method, mine in reports.items()]
    return rows


def budget_draws(data: SubsetData, budget: int, seed: int, draws: int) -> list[SubsetData]:
    """`draws` copies of `data` keeping `budget` fit subsets each, drawn with seeds seed, seed+1, …
    (the first is the single draw reported before draws existed)."""
    return [with_fit_budget(data, budget, seed + draw) for draw in range(draws)]


def draws_summary(reports: list[dict]) -> dict:
    """One method's fidelity over the draws of one fit budget: the median of the mean holdout
    Spearman (and per sampler regime), its range over draws, and how many draws. The median,
    because one draw of a small fit budget swings by ±0.15 (bench/fidelity.py, 2026-12-02)."""
    values = [r["mean_spearman"] for r in reports]
    finite = [v for v in values if v == v]
    return {"draws": len(reports), "holdout_spearman": nan_median(values),
            "holdout_spearman_min": min(finite, default=None), "holdout_spearman_max": max(finite, default=None),
            **{f"holdout_spearman.{sampler}": nan_median(r["per_sampler"][sampler] for r in reports)
               for sampler in reports[0]["per_sampler"]}}


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


def noise_ceilings(outcomes: pl.DataFrame, plan: pl.DataFrame) -> dict[str, float]:
    """Per sampler (mean over tasks), over its subsets retrained ≥ 2 times (by default the
    holdout ones): `repeat_reliability` = Spearman ρ between repeats 0 and 1 of the same
    subsets, and `noise_ceiling` = the best fidelity any surrogate can reach against the mean
    of their R repeats (what holdout fidelity is scored on)."""
    counts = outcomes.group_by("subset_id").agg(pl.col("repeat").n_unique().alias("repeats"))
    joined = (outcomes.join(counts.filter(pl.col("repeats") >= 2), on="subset_id")
              .join(plan.select("subset_id", "sampler"), on="subset_id"))
    ceilings = {}
    for sampler in sorted(joined["sampler"].unique().to_list()):
        repeats = int(joined.filter(pl.col("sampler") == sampler)["repeats"].min())
        per_task = []
        for task in sorted(joined["task"].unique().to_list()):
            wide = (joined.filter((pl.col("sampler") == sampler) & (pl.col("task") == task) & (pl.col("repeat") < 2))
                    .pivot(on="repeat", index="subset_id", values="utility").drop_nulls())
            per_task.append(spearman(wide["0"].to_numpy(), wide["1"].to_numpy()))
        reliability = nan_mean(per_task)
        ceilings[f"repeat_reliability.{sampler}"] = reliability
        ceilings[f"noise_ceiling.{sampler}"] = noise_ceiling(reliability, repeats)
    return ceilings


def fidelity_report_frame(surrogate_id: str, fidelity: dict, by_budget: list[dict], all_fit: int,
                          costs: dict[str, float], ceilings: dict[str, float]) -> pl.DataFrame:
    """One row per (method, sampler regime or "all", number of fit subsets): holdout fidelity
    next to the regime's noise ceiling and the method's artifact cost. A smaller fit budget's
    row is the median over its `draws` (its range over draws on the "all" row)."""
    rows = []
    for method, report in fidelity.items():
        rows.append({"method": method, "sampler": "all", "fit_subsets": all_fit, "draws": 1,
                     "holdout_spearman": report["mean_spearman"], "holdout_pearson": report["mean_pearson"]})
        rows += [{"method": method, "sampler": sampler, "fit_subsets": all_fit, "draws": 1, "holdout_spearman": value,
                  "holdout_pearson": report["per_sampler_pearson"][sampler]}
                 for sampler, value in report["per_sampler"].items()]
    for row in by_budget:
        common = {"method": row["method"], "fit_subsets": row["fit_subsets"], "draws": row.get("draws", 1)}
        rows.append({**common, "sampler": "all", "holdout_spearman": row["holdout_spearman"],
                     "holdout_spearman_min": row.get("holdout_spearman_min"),
                     "holdout_spearman_max": row.get("holdout_spearman_max")})
        rows += [{**common, "sampler": key.split(".", 1)[1], "holdout_spearman": value}
                 for key, value in row.items() if key.startswith("holdout_spearman.")]
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "sampler": pl.Utf8, "fit_subsets": pl.Int64,
                                      "draws": pl.Int64, "holdout_spearman": pl.Float64,
                                      "holdout_spearman_min": pl.Float64, "holdout_spearman_max": pl.Float64,
                                      "holdout_pearson": pl.Float64}).with_columns(
        surrogate_id=pl.lit(surrogate_id),
        noise_ceiling=pl.col("sampler").replace_strict({s.split(".", 1)[1]: v for s, v in ceilings.items()
                                                        if s.startswith("noise_ceiling.")},
                                                       default=None, return_dtype=pl.Float64),
        artifact_seconds=pl.col("method").replace_strict(costs, default=None, return_dtype=pl.Float64))

"""The end-of-run summary: fidelity per surrogate method and selection utility per method."""

from __future__ import annotations

import polars as pl

from ..storage import DeltaStore
from .fidelity import noise_ceilings


def fidelity_table(store: DeltaStore) -> pl.DataFrame:
    """Returns mean-over-tasks holdout Spearman ρ per method, overall and per sampler regime."""
    predictions = store.read("surrogate_predictions").filter(pl.col("role") == "holdout")
    per_task = (predictions.group_by("method", "sampler", "task")
                .agg(pl.corr("predicted", "actual", method="spearman").alias("rho")))
    by_sampler = (per_task.group_by("method", "sampler").agg(pl.col("rho").fill_nan(None).mean())
                  .pivot(on="sampler", index="method", values="rho"))
    surrogates = store.read("surrogates")
    overall = (surrogates.group_by("method")
               .agg(pl.col("holdout_spearman").fill_nan(None).mean().alias("all_holdout"),
                    pl.col("holdout_pearson").fill_nan(None).mean().alias("pearson"),
                    pl.col("cv_lcb").first(),
                    *([pl.col("artifact_seconds").first()] if "artifact_seconds" in surrogates.columns else [])))
    return overall.join(by_sampler, on="method").sort("all_holdout", descending=True, nulls_last=True)


def fit_budget_table(store: DeltaStore) -> pl.DataFrame | None:
    """Returns mean holdout Spearman ρ per method (rows) and number of fit subsets (columns)."""
    if not store.exists("fidelity_report"):
        return None
    report = store.read("fidelity_report").filter(pl.col("sampler") == "all")
    if report["fit_subsets"].n_unique() < 2:
        return None
    return (report.sort("fit_subsets").pivot(on="fit_subsets", index="method", values="holdout_spearman")
            .sort("method"))


def noise_ceiling_table(store: DeltaStore) -> pl.DataFrame | None:
    """Returns the noise ceiling per sampler regime, or None with a single repeat."""
    ceilings = noise_ceilings(store.read("subset_outcomes"), store.read("subset_plan"))
    if not ceilings:
        return None
    samplers = sorted({k.split(".", 1)[1] for k in ceilings})
    return pl.DataFrame({"sampler": samplers,
                         "repeat_reliability": [ceilings[f"repeat_reliability.{s}"] for s in samplers],
                         "noise_ceiling": [ceilings[f"noise_ceiling.{s}"] for s in samplers]})


def selection_table(store: DeltaStore) -> pl.DataFrame:
    """Returns mean-over-tasks retrained utility per selection method (and its budget)."""
    validation = store.read("selection_validation")
    return (validation.group_by("method").agg(pl.col("utility").mean().alias("mean_utility"),
                                               pl.col("budget").first())
            .sort("mean_utility", descending=True))


def mixture_table(store: DeltaStore) -> pl.DataFrame:
    mixtures = store.read("mixture_weights")
    return (mixtures.pivot(on="domain", index=["method", "predicted_utility"], values="weight")
            .sort("predicted_utility", descending=True))


def format_summary(store: DeltaStore, stage_seconds: dict[str, float] | None = None) -> str:
    """Returns a plain-text summary of a finished run."""
    with pl.Config(tbl_rows=50, tbl_cols=20, float_precision=3, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, tbl_width_chars=200,
                   fmt_str_lengths=60):
        parts = ["Holdout fidelity (mean over tasks of Spearman ρ, predicted vs retrained utility):",
                 str(fidelity_table(store))]
        ceilings = noise_ceiling_table(store)
        parts += (["Noise ceiling (no surrogate can beat it: retraining the same subsets with another data order):",
                   str(ceilings)] if ceilings is not None else
                  ["Noise ceiling: not measured (set [retrain] repeats = 2)."])
        by_budget = fit_budget_table(store)
        if by_budget is not None:
            parts += ["Holdout fidelity by number of fit subsets (retrainings the surrogate was fitted on):",
                      str(by_budget)]
        parts += ["Selections retrained at the same budget (mean utility = −loss over tasks; higher is better):",
                  str(selection_table(store)),
                  "Mixtures (predicted task-weighted utility at the selection budget):",
                  str(mixture_table(store))]
        if stage_seconds:
            parts += ["Wall seconds per stage:",
                      str(pl.DataFrame({"stage": list(stage_seconds), "seconds": list(stage_seconds.values())}))]
    return "\n".join(parts)

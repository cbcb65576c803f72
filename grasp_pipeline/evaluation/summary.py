"""The end-of-run summary: fidelity per surrogate method and selection utility per method."""

from __future__ import annotations

import polars as pl

from ..infra.storage import DeltaStore
from .fidelity import noise_ceilings


def fidelity_table(store: DeltaStore) -> pl.DataFrame:
    """Returns mean-over-tasks holdout Spearman ρ per method, overall and per sampler regime."""
    predictions = store.read("surrogate_predictions").filter(pl.col("role") == "holdout")
    per_task = (predictions.group_by("method", "sampler", "task")
                .agg(pl.corr("predicted", "actual", method="spearman").alias("rho"))
                .sort("method", "sampler", "task"))  # group_by's order is not fixed: a mean of ±ρ summed in
    # another order printed -0.000 on one call, 0.000 on the next
    # sorted before the pivot: its columns come in order of appearance
    by_sampler = (per_task.group_by("method", "sampler").agg(pl.col("rho").fill_nan(None).mean())
                  .sort("method", "sampler").pivot(on="sampler", index="method", values="rho"))
    surrogates = store.read("surrogates").sort("method", "task", "surrogate_id")
    overall = (surrogates.group_by("method")
               .agg(pl.col("holdout_spearman").fill_nan(None).mean().alias("all_holdout"),
                    pl.col("holdout_pearson").fill_nan(None).mean().alias("pearson"),
                    pl.col("cv_lcb").first(),
                    *([pl.col("artifact_seconds").first()] if "artifact_seconds" in surrogates.columns else [])))
    return overall.join(by_sampler, on="method").sort(["all_holdout", "method"], descending=[True, False],
                                                      nulls_last=True)


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
            .sort(["mean_utility", "method"], descending=[True, False]))  # ties by name: the same text each time


def curation_test_table(store: DeltaStore) -> pl.DataFrame | None:
    """The headline: every selection and mixture on the held-out test (mean over tasks), with its
    gain over the reference and the 95% interval, tasks ahead, sign-test p and percentile."""
    if not store.exists("curation_test"):
        return None
    frame = store.read("curation_test").filter((pl.col("task") == "all") & (pl.col("kind") != "random_reference")
                                               & (pl.col("method") != "random_at_counts"))  # its draws: the verdict
    tasks = store.read("curation_test").filter(pl.col("task") != "all")["task"].n_unique()
    return (frame.select("method", "reference", pl.col("utility").alias("test_utility"),
                         pl.col("gain_vs_reference").alias("gain"), "ci_low", "ci_high",
                         pl.format("{}/{}", "tasks_ahead", pl.lit(tasks)).alias("tasks_ahead"),
                         pl.col("sign_test_p").alias("sign_p"), pl.col("percentile").alias("pct_of_random"),
                         pl.col("floor_utility").alias("composition_only"))
            .sort("reference", "test_utility", "method", descending=[False, True, False]))


def verdict_table(store: DeltaStore, table: str) -> pl.DataFrame | None:
    """The verdict (evaluation/verdict.py) of `curation_test_verdict` or `validation_verdict`: gains over
    random or natural, then the differences, each with its interval, p, candidates and dev retrainings."""
    if not store.exists(table) or store.read(table).is_empty():
        return None
    frame = store.read(table).filter(~pl.col("method").str.starts_with("random-"))
    return (frame.with_columns(comparison=pl.format("{} − {}", "method", "reference"),
                               verdict=pl.when(pl.col("ci_low") > 0).then(pl.lit("ahead"))
                               .when(pl.col("ci_high") < 0).then(pl.lit("behind")).otherwise(pl.lit("level")))
            .sort(pl.col("kind") == "difference", pl.col("method").str.starts_with("mixture-"), -pl.col("gain"),
                  "comparison")
            .select("comparison", "gain", "ci_low", "ci_high", "verdict", "p_value",
                    pl.col("null_percentile").alias("pct_of_random"), "draws", "candidates", "dev_retrainings"))


def dirt_table(store: DeltaStore) -> pl.DataFrame | None:
    """Each selection's share of each labelled kind of dirt, with the random references' mean as a row."""
    if not store.exists("curation_test_dirt") or store.read("curation_test_dirt").is_empty():
        return None
    frame = store.read("curation_test_dirt").filter(~pl.col("selection_id").str.starts_with("test-random-"))
    random = (frame.select("kind", "random_share").unique("kind", maintain_order=True)
              .with_columns(method=pl.lit("random (mean of the test references)")).rename({"random_share": "share"}))
    both = pl.concat([frame.select("method", "kind", "share"), random.select("method", "kind", "share")])
    # a method of several draws (random_at_counts) shows their mean
    return both.pivot(on="kind", index="method", values="share", aggregate_function="mean").drop("clean", strict=False)


def calibration_table(store: DeltaStore) -> pl.DataFrame | None:
    """Predicted vs realised dev gain of the loop's candidates (`curation_rounds`), per kind, proposer and
    round, then over all rounds: how much the surrogate promises on what it optimises, and whether it
    ranks it (slope of realised on predicted: 1 = honest, 0 = no ranking; null under 3 candidates)."""
    if not store.exists("curation_rounds"):
        return None
    rounds = store.read("curation_rounds").filter(pl.col("predicted_gain").is_not_null())
    if rounds.is_empty():
        return None
    rounds = rounds.with_columns(pl.col("round").cast(pl.Utf8)).sort("kind", "proposer", "round", "candidate_id")
    every = pl.concat([rounds, rounds.with_columns(round=pl.lit("all"))])
    slope = pl.cov("predicted_gain", "realised_gain") / pl.col("predicted_gain").var()
    return (every.group_by("kind", "proposer", "round", maintain_order=True)
            .agg(candidates=pl.len(), mean_predicted=pl.col("predicted_gain").mean(),
                 mean_realised=pl.col("realised_gain").mean(),
                 slope=pl.when(pl.len() >= 3).then(slope),
                 r=pl.when(pl.len() >= 3).then(pl.corr("predicted_gain", "realised_gain"))))


def composition_floor_line(store: DeltaStore) -> str | None:
    """Retrained test loss next to the composition-only floor (per-domain unigram of each training subset)."""
    if not store.exists("curation_test"):
        return None
    rows = store.read("curation_test").filter(pl.col("task") != "all")
    if rows["floor_utility"].null_count() == rows.height:
        return None
    loss, floor = float(rows["loss"].mean()), float(-rows["floor_utility"].mean())
    worst = (rows.group_by("task").agg((pl.col("loss") + pl.col("floor_utility")).mean().alias("gap"))
             .sort("gap", descending=True).row(0))
    return (f"Retrained test loss {loss:.3f} nats/unit vs composition only {floor:.3f} "
            f"({floor - loss:+.3f} better; the task closest to it: {worst[0]} at {-worst[1]:+.3f}).")


def target_check_lines(store: DeltaStore) -> list[str]:
    """The target check in words: rank agreement over mixtures and GRASP's standing at target scale."""
    if not store.exists("target_check"):
        return []
    frame = store.read("target_check")
    wide = frame.pivot(on="level", index=["candidate", "kind"], values="utility").sort("kind", "target",
                                                                                    descending=[False, True])
    lines = ["TARGET CHECK (the proxy's candidates retrained with the target recipe, test examples, fresh seeds):",
             str(wide)]
    if store.exists("target_check_summary"):
        lines.append(str(store.read("target_check_summary")))
    return lines


def mixture_table(store: DeltaStore) -> pl.DataFrame:
    mixtures = store.read("mixture_weights")
    return (mixtures.pivot(on="domain", index=["method", "predicted_utility"], values="weight")
            .sort(["predicted_utility", "method"], descending=[True, False]))


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
                  ["Noise ceiling: not measured (set [retrain] holdout_repeats = 2)."])
        by_budget = fit_budget_table(store)
        if by_budget is not None:
            parts += ["Holdout fidelity by number of fit subsets (retrainings the surrogate was fitted on):",
                      str(by_budget)]
        verdict = verdict_table(store, "curation_test_verdict")
        if verdict is not None:
            parts += ["HELD-OUT VERDICT (curation_test_verdict: test documents, fresh seeds; a selection is one draw "
                      "among random ones; `grasp − random_pick` is GRASP against the same dev retrainings without "
                      "it; 95% intervals; these are the figures to act on):", str(verdict)]
        test = curation_test_table(store)
        if test is not None:
            parts += ["Held-out test per method (curation_test; tasks ahead, sign test, the composition-only floor):",
                      str(test)]
            line = composition_floor_line(store)
            parts += [line] if line else []
            dirt = dirt_table(store)
            if dirt is not None:
                parts += ["Share of the labelled dirt in each selection (the pipeline never reads the labels):",
                          str(dirt)]
        parts += target_check_lines(store)
        dev = verdict_table(store, "validation_verdict")
        parts += (["Dev verdict (validation_verdict: the same statistics on dev, the recipe's seeds; what method work "
                   "is judged by, not the proof):", str(dev)] if dev is not None else [])
        calibration = calibration_table(store)
        parts += (["Surrogate calibration on the loop's candidates (dev gains over random; slope of realised on "
                   "predicted gain: 1 = honest, 0 = no ranking; random_pick's predictions are the same surrogate's "
                   "on random proposals):", str(calibration)] if calibration is not None else [])
        parts += ["Dev validation (selection_validation: dev examples, the recipe's own seeds; what the loop may look "
                  "at, not the proof):", str(selection_table(store)),
                  "Mixtures (predicted task-weighted utility at the selection budget):",
                  str(mixture_table(store))]
        if stage_seconds:
            parts += ["Wall seconds per stage:",
                      str(pl.DataFrame({"stage": list(stage_seconds), "seconds": list(stage_seconds.values())}))]
    return "\n".join(parts)

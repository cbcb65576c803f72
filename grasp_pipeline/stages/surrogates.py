"""Surrogate stage: every method chosen by LCB on fit subsets, fitted, and scored on holdout."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import polars as pl

from ..config.params import SurrogateParams
from ..evaluation.fidelity import fidelity_by_fit_budget, fidelity_report_frame, holdout_fidelity, noise_ceilings
from ..infra.commits import fingerprint
from ..infra.storage import DeltaStore
from ..surrogates.data import SubsetData
from ..surrogates.lcb import CandidateWorkers, fit_surrogates
from .base import StageResult, refuse_non_finite, stage
from .figures import fidelity_budget_figure, predicted_vs_actual_figure
from .tables import load_subset_data


@stage
def run_surrogates(store: DeltaStore, params: SurrogateParams, mlflow_run_id: str = "") -> StageResult:
    """Chooses and fits every surrogate method; writes `surrogates`, `surrogate_candidates`,
    `surrogate_predictions` and `fidelity_report`."""
    data, sketches, plan = load_subset_data(store)
    with CandidateWorkers(data, params.workers) as workers:  # one set of processes serves every protocol run
        fitted = fit_surrogates(data, params, workers=workers)
        by_budget = fidelity_by_fit_budget(data, params, params.fidelity_fit_budgets, workers=workers)
    costs = artifact_seconds(store, data, fitted)
    # `workers` changes where the fits run, not what they give: it stays out of the id
    settings = {k: v for k, v in asdict(params).items() if k != "workers"}
    surrogate_id = "sg-" + fingerprint(settings, sketches["sketch_config"][0],
                                       data.utility.tobytes(), plan["members"].to_list())
    fidelity = {method: holdout_fidelity(data, fm.predicted) for method, fm in fitted.items()}
    surrogates, candidates, predictions = _surrogate_frames(surrogate_id, data, fitted, fidelity, costs,
                                                            sketches["example_id"].to_list(), mlflow_run_id)
    # all four tables are refused together, before the first of them is written
    cause = (f"the fits diverged on utilities in [{np.nanmin(data.utility):.4g}, {np.nanmax(data.utility):.4g}] "
             "(subset_outcomes): raise the ridges (surrogate.grasp_ridges, surrogate.datamodel_ridges) or retrain "
             "with a lower retrain.lr")
    refuse_non_finite("surrogates", surrogates, ["params"], ["method", "task"], cause)
    refuse_non_finite("surrogate_predictions", predictions, ["predicted"], ["method", "task", "subset_id"], cause)
    # the model the fit's sketches were taken at: readers combining sketches and this fit check it (check_one_model)
    surrogates = surrogates.with_columns(model_version=pl.lit(sketches["model_version"][0]))
    result = StageResult()
    result.write(store, "surrogates", surrogates)
    result.write(store, "surrogate_candidates", candidates)
    result.write(store, "surrogate_predictions", predictions)
    ceilings = noise_ceilings(store.read("subset_outcomes"), plan)
    result.write(store, "fidelity_report", fidelity_report_frame(
        surrogate_id, fidelity, by_budget, len(data.fit_rows), costs, ceilings))
    result.metrics = {"surrogate_id": surrogate_id}
    for method, report in fidelity.items():
        result.metrics[f"holdout_spearman.{method}"] = report["mean_spearman"]
        for sampler, value in report["per_sampler"].items():
            result.metrics[f"holdout_spearman.{method}.{sampler}"] = value
        result.metrics[f"cv_lcb.{method}"] = fitted[method].chosen.cv_lcb
        result.metrics[f"holdout_pearson.{method}"] = report["mean_pearson"]
        result.metrics[f"artifact_seconds.{method}"] = costs[method]
    result.metrics.update({f"fit_budget_{row['fit_subsets']}.holdout_spearman.{row['method']}": row["holdout_spearman"]
                           for row in by_budget})
    result.artifacts["fidelity.json"] = fidelity
    result.artifacts["fidelity_by_fit_budget.json"] = {"rows": by_budget, "all_fit_subsets": len(data.fit_rows)}
    result.artifacts["artifact_seconds.json"] = costs
    result.artifacts["grasp_chosen_config.json"] = fitted["grasp"].chosen.config
    result.figures["grasp_predicted_vs_actual.png"] = predicted_vs_actual_figure(data, fitted["grasp"].predicted)
    if by_budget:
        result.figures["fidelity_by_fit_budget.png"] = fidelity_budget_figure(
            by_budget, {m: fidelity[m]["mean_spearman"] for m in fidelity}, len(data.fit_rows))
    return result


def _surrogate_frames(surrogate_id: str, data: SubsetData, fitted: dict, fidelity: dict, costs: dict,
                      example_ids: list, mlflow_run_id: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The surrogates, surrogate_candidates and surrogate_predictions rows of every fitted method."""
    surrogate_rows, candidate_rows, prediction_frames = [], [], []
    for method, fm in fitted.items():
        report, chosen = fidelity[method], fm.chosen
        for t, task in enumerate(data.tasks):
            # the task's utility spread over fit subsets: the scale selection.task_scale divides by
            params_t = {**fm.params[t], "fit_utility_std": float(np.std(data.utility[data.fit_rows, t], ddof=1))}
            if method == "datamodel":  # weights are indexed by pool row: keep their example ids
                params_t = {**params_t, "example_ids": example_ids}
            surrogate_rows.append({
                "surrogate_id": surrogate_id, "method": method, "task": task,
                "params": json.dumps(params_t, sort_keys=True), "config": json.dumps(chosen.config, sort_keys=True),
                "cv_mean": chosen.cv_mean, "cv_lcb": chosen.cv_lcb,
                "holdout_spearman": report["per_task"][task]["spearman"],
                "holdout_pearson": report["per_task"][task]["pearson"], "mlflow_run_id": mlflow_run_id,
                "artifact_seconds": costs[method]})
            prediction_frames.append(pl.DataFrame({
                "surrogate_id": surrogate_id, "method": method, "subset_id": data.subset_ids, "task": task,
                "role": data.roles, "sampler": data.samplers, "predicted": fm.predicted[:, t],
                "actual": data.utility[:, t]}))
        candidate_rows += [{"surrogate_id": surrogate_id, "method": method, "candidate": c.candidate,
                            "config": json.dumps(c.config, sort_keys=True), "cv_mean": c.cv_mean,
                            "cv_sd": c.cv_sd, "cv_lcb": c.cv_lcb, "chosen": c.chosen,
                            "fold_scores": json.dumps(c.fold_scores)} for c in fm.candidates]
    surrogates = pl.DataFrame(surrogate_rows, schema_overrides={
        "cv_mean": pl.Float64, "cv_lcb": pl.Float64, "holdout_spearman": pl.Float64, "holdout_pearson": pl.Float64,
        "artifact_seconds": pl.Float64})
    candidates = pl.DataFrame(candidate_rows, schema_overrides={
        "candidate": pl.Int64, "cv_mean": pl.Float64, "cv_sd": pl.Float64, "cv_lcb": pl.Float64})
    return surrogates, candidates, pl.concat(prediction_frames).with_columns(pl.col("subset_id").cast(pl.Int64))


def artifact_seconds(store: DeltaStore, data: SubsetData, fitted: dict) -> dict[str, float]:
    """Returns wall seconds to build what each method needs, from the times recorded in the tables.

    Sketch-based methods (grasp, grad_dot, trak) pay for the reference model and every pool and
    task sketch; every method pays for the retrainings of the fit subsets it is fitted on (all
    repeats) and for its own choice and fit.
    """
    sketching = (float(store.read("reference_models")["seconds"].sum())
                 + float(store.read("gradient_sketches")["seconds"].sum())
                 + float(store.read("task_sketches")["seconds"].sum()))
    fit_ids = set(data.subset_ids[data.fit_rows].tolist())
    retraining = float(store.read("subset_outcomes").filter(pl.col("subset_id").is_in(fit_ids))
                       .unique(["subset_id", "repeat"])["seconds"].sum())
    needs_sketches = {"grasp", "grad_dot", "trak"}
    return {method: (sketching if method in needs_sketches else 0.0) + retraining + fm.seconds
            for method, fm in fitted.items()}

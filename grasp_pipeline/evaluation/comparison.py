"""Comparing retrained selections and mixtures: the figures the curation and mixture targets read."""

from __future__ import annotations

import polars as pl


def selection_comparison(frame: pl.DataFrame) -> dict[str, float]:
    """Returns the curation and mixture targets' figures from a selection_validation frame:
    share of tasks where grasp beats the mean of the random selections, and mean-utility gaps."""
    wide = frame.pivot(on="method", index="task", values="utility", aggregate_function="mean")  # draws of one method
    randoms = [c for c in wide.columns if c.startswith("random-")]
    out = {}
    if "grasp" in wide.columns and randoms:
        random_mean = wide.select(randoms).mean_horizontal()
        out["grasp_beats_random_task_share"] = float((wide["grasp"] > random_mean).mean())
        out["grasp_minus_random_mean_utility"] = float((wide["grasp"] - random_mean).mean())
    if {"grasp", "grad_dot"} <= set(wide.columns):
        out["grasp_minus_grad_dot_mean_utility"] = float((wide["grasp"] - wide["grad_dot"]).mean())
    for other in ("natural", "uniform"):
        if {"mixture-grasp", f"mixture-{other}"} <= set(wide.columns):
            out[f"mixture_grasp_minus_{other}_mean_utility"] = float(
                (wide["mixture-grasp"] - wide[f"mixture-{other}"]).mean())
    return out

"""The figures stages log to MLflow and show inline in the Dagster metadata (matplotlib, Agg)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..surrogates.data import SubsetData


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (stages run headless, in workers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shares_figure(frame: pl.DataFrame, group: str, value: str, ylabel: str):
    """Stacked bars: one bar per `group` value, one segment per domain."""
    plt = pyplot()
    groups = sorted(frame[group].unique().to_list())
    domains = sorted(frame["domain"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(4, len(groups) * 0.9), 3.5))
    bottom = np.zeros(len(groups))
    for domain in domains:
        heights = np.array([frame.filter((pl.col(group) == g) & (pl.col("domain") == domain))[value].sum()
                            for g in groups])
        ax.bar(groups, heights, bottom=bottom, label=domain)
        bottom += heights
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def utility_figure(frame: pl.DataFrame):
    plt = pyplot()
    frame = frame.group_by("method", "task").agg(pl.col("utility").mean())  # a method's draws (random_at_counts)
    methods = sorted(frame["method"].unique().to_list())
    tasks = sorted(frame["task"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 1.2), 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        mine = frame.filter(pl.col("method") == method).sort("task")
        ax.bar(np.arange(len(tasks)) + i * width, mine["utility"].to_numpy(), width, label=method)
    ax.set_xticks(np.arange(len(tasks)) + 0.4, tasks, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("retrained utility (−loss)")
    ax.set_ylim(frame["utility"].min() - 0.1, frame["utility"].max() + 0.1)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


def fidelity_budget_figure(rows: list[dict], full: dict[str, float], all_fit: int):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in sorted({r["method"] for r in rows}):
        points = sorted((r["fit_subsets"], r["holdout_spearman"]) for r in rows if r["method"] == method)
        points.append((all_fit, full[method]))
        ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fit subsets (retrainings)")
    ax.set_ylabel("holdout Spearman ρ (mean over tasks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def predicted_vs_actual_figure(data: SubsetData, predicted: np.ndarray):
    plt = pyplot()
    rows = data.holdout_rows
    fig, axes = plt.subplots(1, len(data.tasks), figsize=(3 * len(data.tasks), 3), squeeze=False)
    for t, (ax, task) in enumerate(zip(axes[0], data.tasks)):
        for sampler in sorted(set(data.samplers[rows])):
            mine = rows[data.samplers[rows] == sampler]
            ax.scatter(predicted[mine, t], data.utility[mine, t], s=8, label=sampler)
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("predicted utility")
    axes[0][0].set_ylabel("retrained utility (holdout)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig

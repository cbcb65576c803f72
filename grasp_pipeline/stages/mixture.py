"""Mixture stage: natural, uniform and the exact GRASP-optimal domain weights."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import MixtureParams
from ..config.validation import SettingError
from ..mixture import MixtureObjective, domain_stats, natural_mixture, optimise_mixture, uniform_mixture
from ..selection import task_weight_vector
from ..storage import DeltaStore
from .base import StageResult, stage
from .figures import shares_figure
from .tables import method_params, pool_sketches


@stage
def optimise_mixtures(store: DeltaStore, params: MixtureParams) -> StageResult:
    """Optimises domain weights under GRASP; writes `mixture_weights` (natural, uniform, grasp)."""
    sketches = pool_sketches(store)
    z = np.asarray(sketches["sketch"].to_list(), dtype=np.float64)
    q = np.asarray(store.read("task_sketches").sort("task")["sketch"].to_list(), dtype=np.float64)
    surrogate_id, tasks, grasp_params = method_params(store, "grasp")
    weights = task_weight_vector(tasks, dict(params.task_weights))
    stats = domain_stats(z, sketches["domain"].to_numpy())
    budget = max(1, int(round(params.budget_fraction * len(z))))
    if params.max_repeats * len(z) < budget:  # the capped simplex is empty: no mixture reaches the budget
        raise SettingError(f"mixture.max_repeats = {params.max_repeats!r}: with mixture.budget_fraction = "
                           f"{params.budget_fraction!r} ({budget} of {len(z)} pool examples) it must be at least "
                           f"{budget / len(z):.4g}")
    objective = MixtureObjective(stats, q, grasp_params, weights, budget)
    caps = np.minimum(1.0, params.max_repeats * stats.counts / budget)
    mixtures = {"natural": natural_mixture(stats), "uniform": uniform_mixture(stats),
                "grasp": optimise_mixture(objective, caps)}
    rows = [{"mixture_id": f"{surrogate_id}-{method}", "method": method, "domain": domain,
             "weight": float(pi[d]), "predicted_utility": objective(pi), "budget": budget}
            for method, pi in mixtures.items() for d, domain in enumerate(stats.domains)]
    result = StageResult()
    result.write(store, "mixture_weights", pl.DataFrame(rows, schema_overrides={"budget": pl.Int64}))
    result.metrics = {f"predicted_utility.{m}": objective(pi) for m, pi in mixtures.items()}
    result.metrics.update({f"weight.grasp.{d}": float(w) for d, w in zip(stats.domains, mixtures["grasp"])})
    result.figures["mixture_weights.png"] = shares_figure(
        pl.DataFrame(rows), "method", "weight", "domain weight")
    return result

"""Mixture stage: natural, uniform, the exact GRASP-optimal domain weights, and the peer mixers
(RegMix, log-linear mixing law) fitted on the same fit subsets."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np
import polars as pl

from ..config.params import MixtureParams
from ..config.validation import SettingError
from ..infra.storage import DeltaStore
from ..mixture import DomainStats, MixtureObjective, domain_stats, natural_mixture, optimise_mixture, uniform_mixture
from ..mixture.regression import (
    MixtureData,
    fit_loglinear,
    fit_regmix,
    propose_loglinear,
    propose_regmix,
    subset_shares,
)
from ..selection import task_weight_vector
from .base import StageResult, stage
from .figures import shares_figure
from .tables import (
    method_params,
    natural_weights,
    pool_sketches,
    sketch_matrix,
    subset_utilities,
    target_caps,
    target_weights,
)


@stage
def run_mixture_weights(store: DeltaStore, params: MixtureParams,
                        task_weights: dict[str, float] | None = None) -> StageResult:
    """Optimises domain weights under GRASP for the loop's target (or `task_weights`, from `grasp mixture
    --task-weight`: another target without rerunning the loop); writes `mixture_weights` (natural,
    uniform, grasp).

    Metrics carry each mixture's predicted utility, the grasp weights, and whether the
    objective is concave on the simplex (`mixture_concave`, 1.0 or 0.0; its largest curvature
    there, `mixture_max_curvature`, in utility units).
    """
    sketches = pool_sketches(store)
    z = sketch_matrix(sketches["sketch"])
    q = sketch_matrix(store.read("task_sketches").sort("task")["sketch"])
    surrogate_id, tasks, grasp_params = method_params(store, "grasp")
    stats = domain_stats(z, sketches["domain"].to_numpy(), natural_weights(store))
    target = target_weights(store, tasks) if task_weights is None else task_weight_vector(tasks, task_weights)
    objective, weights, caps, budget = mixture_problem(stats, q, grasp_params, target, params,
                                                       target_caps(store, stats.domains))
    mixtures = {"natural": natural_mixture(stats), "uniform": uniform_mixture(stats),
                "grasp_optimum": optimise_mixture(objective, caps)}
    own = {"grasp_optimum": objective(mixtures["grasp_optimum"])}
    for proposer, method in (("grasp", "grasp"), ("random_pick", "random_pick")):
        picked = _loop_pick(store, stats.domains, budget, proposer)
        if picked is not None:
            mixtures[method], own[method] = picked
    for method, (pi, predicted) in _peer_mixtures(store, sketches, stats, tasks, weights, budget, caps,
                                                  params).items():
        mixtures[method], own[method] = pi, predicted
    rows = [{"mixture_id": f"{surrogate_id}-{method}", "method": method, "domain": domain,
             "weight": float(pi[d]), "predicted_utility": objective(pi), "own_predicted_utility": own.get(method),
             "budget": budget}
            for method, pi in mixtures.items() for d, domain in enumerate(stats.domains)]
    result = StageResult()
    result.write(store, "mixture_weights", pl.DataFrame(rows, schema_overrides={"budget": pl.Int64,
                                                                              "own_predicted_utility": pl.Float64}))
    result.metrics = {f"predicted_utility.{m}": objective(pi) for m, pi in mixtures.items()}
    result.metrics.update({f"weight.{m}.{d}": float(w) for m in ("grasp", "grasp_optimum") if m in mixtures
                           for d, w in zip(stats.domains, mixtures[m])})
    # not concave on the simplex: the optimiser took several starts (optimise_mixture)
    result.metrics.update(mixture_concave=float(objective.concave), mixture_max_curvature=objective.max_curvature)
    result.figures["mixture_weights.png"] = shares_figure(
        pl.DataFrame(rows), "method", "weight", "domain weight")
    return result


class MixtureProblem(NamedTuple):
    objective: MixtureObjective
    weights: np.ndarray  # (T,) normalised task weights
    caps: np.ndarray  # (D,) the most of the budget each domain may supply
    budget: int  # examples in a mixture sample


def mixture_problem(stats: DomainStats, task_sketch: np.ndarray, grasp_params: list[dict], weights: np.ndarray,
                    params: MixtureParams, limits: np.ndarray | None = None) -> MixtureProblem:
    """Returns the GRASP mixture objective over `stats`' domains with its task weights, domain caps
    and budget (`mixture.budget_fraction` of the pool, each domain capped at `mixture.max_repeats`
    × its examples and at `limits`: the target run's repetition caps, `target_caps`); SettingError
    when no mixture under the caps reaches the budget."""
    pool_size = int(stats.counts.sum())
    budget = max(1, int(round(params.budget_fraction * pool_size)))
    if params.max_repeats * pool_size < budget:  # the capped simplex is empty: no mixture reaches the budget
        raise SettingError(f"mixture.max_repeats = {params.max_repeats!r}: with mixture.budget_fraction = "
                           f"{params.budget_fraction!r} ({budget} of {pool_size} pool examples) it must be at least "
                           f"{budget / pool_size:.4g}")
    objective = MixtureObjective(stats, task_sketch, grasp_params, weights, budget)
    caps = np.minimum(1.0, params.max_repeats * stats.counts / budget)
    caps = caps if limits is None else np.minimum(caps, limits)
    if caps.sum() < 1:
        raise SettingError(f"mixture.max_repeats = {params.max_repeats!r} under the target run's repetition caps "
                           "(loop.training_bytes, loop.max_epochs): no mixture fills the budget; raise one of them")
    return MixtureProblem(objective, weights, caps, budget)


def _loop_pick(store: DeltaStore, domains: list[str], budget: int,
               proposer: str = "grasp") -> tuple[np.ndarray, float] | None:
    """(π, its lower confidence bound of predicted gain) of the closed loop's chosen mixture by `proposer`
    ("grasp", or the equal-budget control "random_pick": random mixtures, the same retrainings and pick
    rule), or None."""
    if not store.exists("curation_rounds"):
        return None
    rounds = store.read("curation_rounds")
    if "proposer" not in rounds.columns:  # written before the controls: every candidate was GRASP's
        rounds = rounds.with_columns(proposer=pl.lit("grasp"))
    chosen = rounds.filter(pl.col("chosen") & (pl.col("kind") == "mixture") & (pl.col("proposer") == proposer))
    if proposer != "grasp" and chosen.height == 0:
        return None  # the loop ran without its controls (loop.controls = false)
    if chosen.height != 1:
        raise ValueError(f"curation_rounds marks {chosen.height} chosen {proposer} mixtures, not one; "
                         "rematerialise curation_loop")
    if int(chosen["budget"][0]) != budget:
        return None  # the loop measured its pick at its own budget; grasp_optimum still answers this one
    weights = json.loads(chosen["weights"][0])
    if sorted(weights) != sorted(domains):
        raise ValueError(f"the curation loop mixed domains {sorted(weights)}, the pool has {sorted(domains)}; "
                         "rematerialise curation_loop")
    return np.array([weights[d] for d in domains]), float(chosen["lcb"][0])


def _peer_mixtures(store: DeltaStore, sketches: pl.DataFrame, stats, tasks: list[str], weights: np.ndarray,
                   budget: int, caps: np.ndarray, params: MixtureParams) -> dict[str, tuple[np.ndarray, float]]:
    """{method: (π, its own model's predicted utility)} of the peer mixers in `mixture.peers`,
    fitted on the `fit` subsets only (domain shares, size, dev utility)."""
    if not params.peers:
        return {}
    unknown = sorted(set(params.peers) - {"regmix", "loglinear"})
    if unknown:
        raise ValueError(f"mixture.peers {unknown} are not peer mixers; choose from ['loglinear', 'regmix']")
    members, sizes, utility = subset_utilities(store, sketches, tasks, role="fit")
    codes = np.searchsorted(np.asarray(stats.domains), sketches["domain"].to_numpy())
    data = MixtureData(subset_shares(members, codes, len(stats.domains)), sizes, utility)
    natural = natural_mixture(stats)
    out = {}
    if "regmix" in params.peers:
        out["regmix"] = propose_regmix(fit_regmix(data, seed=params.seed), natural, caps, budget, weights,
                                       candidates=params.regmix_candidates, top_k=params.regmix_top_k,
                                       concentration=params.regmix_concentration, seed=params.seed)
    if "loglinear" in params.peers:
        out["loglinear"] = propose_loglinear(fit_loglinear(data), natural, caps, budget, weights, params.loglinear_kl)
    return out

"""Target-check stage: does what the proxy prefers still win at target scale? (the last node)

Every mixture in mixture_weights, a few spread-out Dirichlet mixtures, and the GRASP selection
with random references are retrained twice on fresh seeds — with the proxy recipe and with
the *target recipe* (a larger workload and/or several times more steps, `target.*`) — and
scored on the `test` examples. It reports the rank agreement of proxy- and target-level
utility over the mixtures (Spearman, bootstrap interval over the candidates) and whether the
GRASP picks stay ahead of the natural mixture and of random selections at target scale.
Nothing reads its tables.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
from scipy import stats as scistats

from ..config.params import TargetParams
from ..evaluation.held_out import paired_gains, selection_gains
from ..infra.storage import DeltaStore
from ..mixture import sample_mixture
from ..selection import random_selection
from ..workloads.base import Workload
from .base import StageResult, stage
from .curation_test import train_and_score
from .tables import natural_weights, outcome_recipe, read_pool, read_tasks

ORDER_KEY = 50_000_000
GAIN_PAIR = ("grasp", "natural")  # the mixtures whose paired gain at target scale is reported


@stage
def run_target_check(store: DeltaStore, proxy: Workload, target: Workload, params: TargetParams) -> StageResult:
    """Retrains mixtures and the GRASP selection with the proxy and the target recipe; writes `target_check`."""
    pool = read_pool(store)
    test, tasks, task_index = read_tasks(store, "test")
    recipe = outcome_recipe(store.read("subset_outcomes"))
    target_recipe = replace(recipe, steps=recipe.steps * params.steps_factor,
                            batch_size=params.batch_size or recipe.batch_size, init_seed=params.init_seed)
    proxy_recipe = replace(recipe, init_seed=params.init_seed)
    mixtures, budget = _mixtures(store, pool, params)
    selections = _selections(store, pool, budget, params)
    seeds = list(params.data_order_seeds)
    jobs = ([((key, j), rows, (params.init_seed, seeds[j % len(seeds)]), (seeds[j % len(seeds)], ORDER_KEY + j))
             for key, (_, draws) in mixtures.items() for j, rows in enumerate(draws)]
            + [((key, s), rows, (params.init_seed, s), (s, ORDER_KEY)) for key,
               rows in selections.items() for s in seeds])
    utility = {}
    for level, workload, level_recipe in (("proxy", proxy, proxy_recipe), ("target", target, target_recipe)):
        scored = train_and_score(workload, level_recipe, pool, test, task_index, tasks, jobs, params)
        utility[level] = {key: -loss for (key, _), loss in scored.items()}
    frame, metrics = _report(mixtures, selections, utility, seeds, tasks, params)
    result = StageResult()
    result.write(store, "target_check", frame)
    result.write(store, "target_check_summary", _summary_frame(metrics))
    result.metrics = {**metrics, "target_steps": target_recipe.steps, "target_workload": target.config()["workload"]}
    return result


def _summary_frame(metrics: dict) -> pl.DataFrame:
    """One row per reported figure: (figure, value, ci_low, ci_high)."""
    figures = [("spearman_proxy_target", "spearman_proxy_target", "spearman_ci_low", "spearman_ci_high"),
               ("mixture_grasp_minus_natural_at_target", "target.mixture_grasp_minus_natural",
                "target.mixture_grasp_ci_low", "target.mixture_grasp_ci_high"),
               ("selection_grasp_minus_random_at_target", "target.selection_grasp_minus_random",
                "target.selection_grasp_ci_low", "target.selection_grasp_ci_high"),
               ("selection_grasp_minus_random_at_proxy", "proxy.selection_grasp_minus_random",
                "proxy.selection_grasp_ci_low", "proxy.selection_grasp_ci_high")]
    rows = [{"figure": name, "value": metrics[v], "ci_low": metrics[lo], "ci_high": metrics[hi]}
            for name, v, lo, hi in figures if v in metrics]
    rows.append({"figure": "mixture_candidates", "value": float(metrics["mixture_candidates"]), "ci_low": None,
                 "ci_high": None})
    return pl.DataFrame(rows, schema={"figure": pl.Utf8, "value": pl.Float64, "ci_low": pl.Float64,
                                      "ci_high": pl.Float64})


def _mixtures(store: DeltaStore, pool: pl.DataFrame, params: TargetParams) -> tuple[dict, int]:
    """{name: (π over domains, [sample rows])}: every stored mixture plus seeded Dirichlet spreads."""
    domains = pool["domain"].to_numpy()
    weights = store.read("mixture_weights").sort("method", "domain")
    names = sorted(weights["domain"].unique().to_list())
    budget = int(weights["budget"][0])
    out = {}
    spreads = np.random.default_rng(params.seed).dirichlet(np.full(len(names), params.spread_concentration),
                                                           params.spread_mixtures)
    mixes = [(m, rows["weight"].to_numpy()) for (m,), rows in weights.group_by("method", maintain_order=True)]
    mixes += [(f"spread-{i}", pi) for i, pi in enumerate(spreads)]
    for name, pi in mixes:
        # common random numbers: sample j of every candidate draws from one seed and trains with one
        # seed pair, so equal weights give equal samples and the grasp-vs-natural gain is paired
        count = max(params.samples, params.gain_samples) if name in GAIN_PAIR else params.samples
        out[name] = (pi, [sample_mixture(domains, pi, names, budget, params.seed + j) for j in range(count)])
    return out, budget


def _selections(store: DeltaStore, pool: pl.DataFrame, budget: int, params: TargetParams) -> dict:
    """{"grasp": rows of the GRASP selection, "random-<seed>": the references}."""
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    grasp = store.read("curated_selections").filter(pl.col("method") == "grasp").sort("rank")
    out = {"grasp": np.array([position[e] for e in grasp["example_id"].to_list()])} if grasp.height else {}
    natural, domains = natural_weights(store), pool["domain"].to_numpy()
    for seed in params.random_seeds:
        out[f"random-{seed}"] = random_selection(pool.height, budget, seed, domains=domains, natural=natural).rows
    return out


def _report(mixtures: dict, selections: dict, utility: dict, seeds: list, tasks: list, params) -> tuple:
    """The target_check rows and metrics: per candidate and level the mean test utility; the
    proxy-vs-target Spearman over mixtures; GRASP's gains at target scale with intervals."""
    mean = {level: {name: np.mean([utility[level][(name, j)] for j in range(len(draws))], axis=0)
                    for name, (_, draws) in mixtures.items()} for level in utility}
    names = list(mixtures)
    rows = [{"candidate": name, "kind": "mixture", "level": level, "utility": float(mean[level][name].mean())}
            for level in mean for name in names]
    proxy = np.array([mean["proxy"][n].mean() for n in names])
    target = np.array([mean["target"][n].mean() for n in names])
    rng = np.random.default_rng(params.seed)
    draws = [rng.integers(0, len(names), len(names)) for _ in range(params.bootstrap)]
    boot = [scistats.spearmanr(proxy[d], target[d]).statistic for d in draws if len(set(d.tolist())) > 2]
    rho = float(scistats.spearmanr(proxy, target).statistic)
    low, high = np.nanquantile(boot, [0.025, 0.975])
    metrics = {"spearman_proxy_target": rho, "spearman_ci_low": float(low), "spearman_ci_high": float(high),
               "mixture_candidates": len(names)}
    boot_args = {"bootstrap": params.bootstrap, "seed": params.seed}
    if all(name in mixtures for name in GAIN_PAIR):
        samples = {n: np.stack([utility["target"][(n, j)] for j in range(len(mixtures[n][1]))]) for n in GAIN_PAIR}
        out = paired_gains(samples["grasp"], samples["natural"], **boot_args)
        metrics.update({"target.mixture_grasp_minus_natural": out["mean_gain"],
                        "target.mixture_grasp_ci_low": out["mean_ci"][0],
                        "target.mixture_grasp_ci_high": out["mean_ci"][1]})
    if "grasp" in selections:
        for level in ("proxy", "target"):
            method = np.stack([utility[level][("grasp", s)] for s in seeds])
            refs = np.stack([np.stack([utility[level][(k, s)] for s in seeds]) for k in selections if k != "grasp"])
            out = selection_gains(method, refs, **boot_args)
            metrics.update({f"{level}.selection_grasp_minus_random": out["mean_gain"],
                            f"{level}.selection_grasp_ci_low": out["mean_ci"][0],
                            f"{level}.selection_grasp_ci_high": out["mean_ci"][1]})
            rows += [{"candidate": k, "kind": "selection", "level": level,
                      "utility": float(np.mean([utility[level][(k, s)] for s in seeds]))} for k in selections]
    return pl.DataFrame(rows, schema={"candidate": pl.Utf8, "kind": pl.Utf8, "level": pl.Utf8,
                                      "utility": pl.Float64}), metrics

"""Curation-test stage: every selection and mixture retrained with fresh seeds, scored on `test`.

The last node of the graph (DESIGN §6). Everything upstream fits, chooses and selects on the
`dev` task examples; this stage alone reads `test`. Each selection (and each of
`test.random_seeds` fresh random selections at the same budget, the reference) is retrained
with every (initialisation, data order) pair of `test.init_seeds` × `test.data_order_seeds`;
each mixture is sampled `test.mixture_samples` times, sample j trained with pair j mod pairs
and paired with the natural mixture's sample j. Next to every model it scores the
composition-only floor of its training subset (a per-domain unigram). Nothing reads the
table it writes: its figures are the ones a user acts on.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import TestParams, TrainingParams
from ..config.validation import SettingError
from ..evaluation.dirt import dirt_shares
from ..evaluation.held_out import composition_floor, paired_gains, selection_gains, sign_test, unit_histograms
from ..evaluation.null import gain_over_random
from ..evaluation.verdict import MULTIPLIED_PREFIX, loop_budgets, utilities_by_method, verdict_frame
from ..infra.commits import fingerprint
from ..infra.storage import DeltaStore
from ..mixture import sample_mixture
from ..selection import random_selection
from ..training.retrain import Recipe, TrainJob, train_jobs
from ..workloads.base import Workload
from .base import StageResult, stage
from .tables import natural_weights, outcome_recipe, read_pool, read_tasks, target_weights

SELECTION_ORDER_KEY = 20_000_000  # data-order key shared by every selection (common random numbers)
MIXTURE_ORDER_KEY = 30_000_000  # + sample index: mixture sample j of every mixture shares its order
MULTIPLIED_SEED = 50_000  # + a reference seed: the random selections at test.data_multiplier × the budget


@stage
def run_curation_test(store: DeltaStore, workload: Workload, params: TestParams) -> StageResult:
    """Retrains every selection and mixture on fresh seeds and scores `test`; writes `curation_test`."""
    pool = read_pool(store)
    test, tasks, task_index = read_tasks(store, "test")
    recipe = outcome_recipe(store.read("subset_outcomes"))
    pairs = [(i, o) for i in params.init_seeds for o in params.data_order_seeds]
    _check_fresh_seeds(params, recipe, pairs)
    selections, budget = _selections(store, pool)
    natural, domains = natural_weights(store), pool["domain"].to_numpy()
    references = [(f"test-random-{seed}", f"random-{seed}", budget,
                   random_selection(pool.height, budget, seed, domains=domains, natural=natural).rows)
                  for seed in params.random_seeds]
    selections = selections + _multiplied(pool.height, budget, domains, natural, params)
    mixtures = _mixture_samples(store, pool, params)
    jobs = ([(key, rows, pair, (pair[1], SELECTION_ORDER_KEY))
             for key, *_, rows in selections + references for pair in pairs]
            + [((key, j), rows, pairs[j % len(pairs)], (pairs[j % len(pairs)][1], MIXTURE_ORDER_KEY + j))
               for key, samples in mixtures.items() for j, rows in enumerate(samples)])
    losses = train_and_score(workload, recipe, pool, test, task_index, tasks, jobs, params)
    floors = _floors(workload, pool, test, task_index, tasks, jobs)
    frame = _test_frame(selections, references, mixtures, losses, floors, pairs, tasks, params)
    rounds = store.read("curation_rounds") if store.exists("curation_rounds") else None
    verdict = _verdict(selections, references, mixtures, losses, pairs, loop_budgets(rounds), params,
                       target_weights(store, tasks))
    result = StageResult()
    result.write(store, "curation_test", frame)
    result.write(store, "curation_test_verdict", verdict)
    # always written (empty for a pool without labels) so the catalog's asset for it exists on every run
    result.write(store, "curation_test_dirt", _dirt_frame(pool, selections, references))
    result.metrics = {**_test_metrics(frame, pairs, len(params.random_seeds), params.mixture_samples),
                      "defaults_sha1": defaults_digest()}
    return result


def _verdict(selections, references, mixtures, losses, pairs, budgets, params: TestParams,
             weights: np.ndarray | None) -> pl.DataFrame:
    """The verdict of the test split (evaluation/verdict.py): gains over random with the right null and
    the headline differences, GRASP against the equal-budget controls first, tasks weighted by the
    loop's target (`weights`)."""
    def utility(key):  # (S, T)
        return -np.stack([losses[(key, pair)] for pair in pairs])
    methods = utilities_by_method([(key, method) for key, method, budget, _ in selections], utility)
    randoms = np.stack([utility(key) for key, *_ in references])
    def samples(key):  # (J, T), sample j paired across mixtures
        return -np.stack([losses[((key, j), pairs[j % len(pairs)])] for j in range(len(mixtures[key]))])
    return verdict_frame("test", methods, randoms, {key[1]: samples(key) for key in mixtures}, budgets=budgets,
                         level=params.level, weights=weights)


def defaults_digest() -> str:
    """A hash of the library's default settings (every section): the frozen defaults a test ran under."""
    from dataclasses import asdict

    from ..config.profiles import PipelineParams

    return fingerprint(asdict(PipelineParams()))


def _dirt_frame(pool: pl.DataFrame, selections: list[tuple], references: list[tuple]) -> pl.DataFrame:
    """Each selection's share of every labelled kind of dirt (and of redundant examples) next to the
    mean share of the random references; no rows for a pool without labels (only evaluation reads them)."""
    schema = {"selection_id": pl.Utf8, "method": pl.Utf8, "kind": pl.Utf8, "share": pl.Float64,
              "random_share": pl.Float64}
    if "dirt" not in pool.columns or pool["dirt"].null_count() == pool.height:
        return pl.DataFrame(schema=schema)
    ids = pool["example_id"].to_numpy()
    shares = dirt_shares(pool, {key: ids[rows] for key, _, _, rows in selections + references})
    kinds = [c for c in shares.columns if c not in ("method", "examples")]
    reference = shares.filter(pl.col("method").str.starts_with("test-random-")).select(kinds).mean()
    method_of = {key: method for key, method, _, _ in selections + references}
    return pl.DataFrame([{"selection_id": key, "method": method_of[key], "kind": kind, "share": float(row[kind]),
                          "random_share": float(reference[kind][0])}
                         for row in shares.iter_rows(named=True) for key in [row["method"]] for kind in kinds],
                        schema=schema)


def _check_fresh_seeds(params: TestParams, recipe: Recipe, pairs: list[tuple[int, int]]) -> None:
    if len(params.random_seeds) < 20 or params.mixture_samples < 10 or len(params.init_seeds) < 2:
        raise ValueError("the curation test needs test.random_seeds ≥ 20 seeds, test.mixture_samples ≥ 10 and "
                         f"test.init_seeds ≥ 2 seeds; got {len(params.random_seeds)}, {params.mixture_samples}, "
                         f"{len(params.init_seeds)}")
    used = {recipe.init_seed} & set(params.init_seeds) or {recipe.data_order_seed} & set(params.data_order_seeds)
    if used:
        raise ValueError(f"test seeds {sorted(used)} are the retraining recipe's own seeds; the curation test needs "
                         "fresh ones (test.init_seeds, test.data_order_seeds)")


def _selections(store: DeltaStore, pool: pl.DataFrame) -> tuple[list[tuple], int]:
    """[(selection_id, method, budget, pool rows)] of curated_selections, and the selection budget."""
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    frame = store.read("curated_selections").sort("selection_id", "rank")
    grouped = frame.group_by("selection_id", "method", "budget", maintain_order=True).agg("example_id")
    out = [(sid, method, budget, np.array([position[e] for e in ids]))
           for sid, method, budget, ids in grouped.iter_rows()]
    budgets = {budget for _, method, budget, _ in out if method != "full"}
    if len(budgets) != 1:
        raise ValueError(f"curated_selections holds selections at budgets {sorted(budgets)}; the curation test "
                         "compares selections at one budget: rematerialise curated_selection")
    return out, budgets.pop()


def _multiplied(pool_size: int, budget: int, domains: np.ndarray, natural: dict | None,
                params: TestParams) -> list[tuple]:
    """Random selections (corpus samples) at test.data_multiplier × the budget, under the method name
    `random_x<multiplier>` (evaluation/verdict.py compares `grasp` with their mean); [] when it is 0."""
    if not params.data_multiplier:
        return []
    size = int(round(params.data_multiplier * budget))
    if size > pool_size:
        raise SettingError(f"test.data_multiplier = {params.data_multiplier:g}: {size} examples ({budget} × it) is "
                           f"more than the pool's {pool_size}; lower it, or set 0 to skip the comparison")
    method = f"{MULTIPLIED_PREFIX}{params.data_multiplier:g}"
    # seeds apart from the references' (a larger draw at a reference's seed could contain it)
    return [(f"test-{method}-{seed}", method, size,
             random_selection(pool_size, size, MULTIPLIED_SEED + seed, domains=domains, natural=natural).rows)
            for seed in params.random_seeds[:params.multiplier_draws]]


def _mixture_samples(store: DeltaStore, pool: pl.DataFrame, params: TestParams) -> dict[tuple, list[np.ndarray]]:
    """{(mixture_id, method, budget): [pool rows of sample j]} for every mixture in mixture_weights."""
    domains = pool["domain"].to_numpy()
    mixtures = store.read("mixture_weights").sort("mixture_id", "domain")
    if "natural" not in mixtures["method"].to_list():
        raise ValueError("mixture_weights has no `natural` mixture, the curation test's reference for mixtures; "
                         "rematerialise mixture_weights")
    return {(mixture_id, method, budget): [sample_mixture(domains, rows["weight"].to_numpy(), rows["domain"].to_list(),
                                                          budget, params.mixture_seed + j)
                                           for j in range(params.mixture_samples)]
            for (mixture_id, method, budget), rows in mixtures.group_by("mixture_id", "method", "budget",
                                                                        maintain_order=True)}


def train_and_score(workload: Workload, recipe: Recipe, pool: pl.DataFrame, test: pl.DataFrame,
                    task_index: np.ndarray, tasks: list[str], jobs: list[tuple], params: TrainingParams) -> dict:
    """{(job key, seed pair): (T,) test loss}: each job trained at its initialisation and data order
    (`params.models_per_batch` models per stack, over `params.workers` processes)."""
    pool_inputs, test_inputs = workload.encode(pool["text"].to_list()), workload.encode(test["text"].to_list())
    losses, _ = train_jobs(workload, recipe, pool_inputs, [TrainJob(rows, order, init_seed=pair[0])
                                                            for _, rows, pair, order in jobs],
                           test_inputs, task_index, tasks, models_per_batch=params.models_per_batch,
                           workers=params.workers, label="retraining on test")
    return {(key, pair): losses[j] for j, (key, _, pair, _) in enumerate(jobs)}


def _floors(workload: Workload, pool: pl.DataFrame, test: pl.DataFrame, task_index: np.ndarray,
            tasks: list[str], jobs: list[tuple]) -> dict:
    """{job key: (T,) composition-only floor loss on test}, or {} for a workload without predicted units."""
    if not hasattr(workload, "predicted_units"):
        return {}
    vocabulary = int(workload.unit_vocabulary)
    pool_hist = unit_histograms(workload.predicted_units(pool["text"].to_list()), vocabulary)
    test_hist = unit_histograms(workload.predicted_units(test["text"].to_list()), vocabulary)
    domains = pool["domain"].to_numpy()
    return {key: composition_floor(pool_hist, domains, rows, test_hist, task_index, tasks)
            for key, rows, _, _ in jobs}


TEST_SCHEMA = {"selection_id": pl.Utf8, "method": pl.Utf8, "kind": pl.Utf8, "task": pl.Utf8, "utility": pl.Float64,
               "loss": pl.Float64, "gain_vs_reference": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
               "reference": pl.Utf8, "seeds": pl.Int64, "percentile": pl.Float64, "floor_utility": pl.Float64,
               "tasks_ahead": pl.Int64, "sign_test_p": pl.Float64, "budget": pl.Int64}


def _test_frame(selections, references, mixtures, losses, floors, pairs, tasks, params) -> pl.DataFrame:
    """The curation_test rows: per (selection or mixture, task) and per method over all tasks ("all")."""
    boot = {"bootstrap": params.bootstrap, "seed": params.bootstrap_seed, "level": params.level}
    def utility(key):  # (S, T)
        return -np.stack([losses[(key, pair)] for pair in pairs])
    randoms = np.stack([utility(key) for key, *_ in references])
    rows = []
    for key, method, budget, _ in selections + references:
        kind = "random_reference" if key.startswith("test-random-") else "selection"
        stats = selection_gains(utility(key), randoms, **boot)
        # over all tasks the selection is one draw: its interval carries the between-selection spread
        # (evaluation/null.py); the per-task intervals hold the selection fixed (held_out.selection_gains)
        stats["mean_ci"] = gain_over_random(utility(key), randoms, level=params.level).ci
        rows += _rows(key, method, kind, "random", budget, stats, floors.get(key), len(pairs), tasks, randoms)
    natural = next(key for key in mixtures if key[1] == "natural")
    def samples(key):  # (J, T)
        return -np.stack([losses[((key, j), pairs[j % len(pairs)])] for j in range(len(mixtures[key]))])
    for key in mixtures:
        mixture_id, name, budget = key
        stats = paired_gains(samples(key), samples(natural), **boot)
        floor = (np.mean([floors[(key, j)] for j in range(len(mixtures[key]))], axis=0) if floors else None)
        rows += _rows(mixture_id, f"mixture-{name}", "mixture", "natural", budget, stats, floor,
                      len(mixtures[key]), tasks, None)
    return pl.DataFrame(rows, schema=TEST_SCHEMA)


def _rows(key, method, kind, reference, budget, stats, floor, seeds, tasks, randoms) -> list[dict]:
    ahead, p_value = sign_test(stats["gain"])
    base = {"selection_id": key, "method": method, "kind": kind, "reference": reference, "seeds": seeds,
            "budget": int(budget), "tasks_ahead": ahead, "sign_test_p": p_value}
    out = [{**base, "task": task, "utility": float(stats["utility"][t]), "loss": -float(stats["utility"][t]),
            "gain_vs_reference": float(stats["gain"][t]), "ci_low": float(stats["ci_low"][t]),
            "ci_high": float(stats["ci_high"][t]),
            "percentile": None if stats["percentile"] is None else float(stats["percentile"][t]),
            "floor_utility": None if floor is None else -float(floor[t])} for t, task in enumerate(tasks)]
    overall = float(stats["utility"].mean())
    percentile = None if randoms is None else float((randoms.mean(1).mean(1) < overall).mean())
    out.append({**base, "task": "all", "utility": overall, "loss": -overall, "gain_vs_reference": stats["mean_gain"],
                "ci_low": stats["mean_ci"][0], "ci_high": stats["mean_ci"][1], "percentile": percentile,
                "floor_utility": None if floor is None else -float(np.mean(floor))})
    return out


def _test_metrics(frame: pl.DataFrame, pairs: list, random_references: int, mixture_samples: int) -> dict:
    overall = frame.filter((pl.col("task") == "all") & (pl.col("kind") != "random_reference"))
    metrics = {"seed_pairs": len(pairs), "random_references": random_references, "mixture_samples": mixture_samples}
    for row in overall.iter_rows(named=True):
        prefix = f"test.{row['method']}"
        metrics.update({f"{prefix}.utility": row["utility"], f"{prefix}.gain": row["gain_vs_reference"],
                        f"{prefix}.ci_low": row["ci_low"], f"{prefix}.ci_high": row["ci_high"],
                        f"{prefix}.tasks_ahead": row["tasks_ahead"], f"{prefix}.sign_test_p": row["sign_test_p"]})
    per_task = frame.filter(pl.col("task") != "all")
    if per_task["floor_utility"].null_count() < per_task.height:
        metrics["test.mean_loss"] = float(per_task["loss"].mean())
        metrics["test.composition_only_loss"] = float(-per_task["floor_utility"].mean())
        metrics["test.loss_below_composition_only"] = float(-per_task["floor_utility"].mean() - per_task["loss"].mean())
    return metrics

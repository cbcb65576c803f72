"""What ranking random draws at a selection's domain counts buys, per surrogate, on dev (issue 26).

    python bench/within_counts.py --root ROOT [--draws 2000] [--top 10] [--dedup]

ROOT is a storage root `grasp run` finished (it reads the plan, outcomes, sketches and the fitted
surrogates' configurations; it writes nothing there). Prints ONE JSON object on stdout (progress
goes to stderr) with a top-level `ratios` object.

The loop's `screen` search retrains the surrogate's best-ranked random draws at the counts, so
what it can add over `random_at_counts` is the ranking alone. This measures that ceiling for
every ranker side by side, on one set of draws:
1. `--draws` random draws at the natural mixture's counts of the loop's selection budget (one row
   per content, as the loop's), from the whole pool, or with `--dedup` from
   the pool left after the loop's near-duplicate filter (`loop.near_duplicate_threshold`).
2. Rankers, each fitted on the plan's `fit` subsets only with its stored configuration: GRASP on
   every checkpoint block and their mean (TRAK's ensembles), datamodel, TRAK, grad_dot, and the
   subset's mean reference-model loss (low first: the filter's signal).
3. Each ranker's `--top` draws, `--top` random draws of the same draws (`random_kept`) and 2·`--top`
   random draws from the whole pool (`random_at_counts`, the reference) are retrained with the
   outcome recipe and two data orders and scored on dev (task mean). No test row is read.

Ratios: each ranker's mean dev gain over `random_at_counts`, in sds of `random_at_counts`' utilities
(#26 asks for ≥ 2 of GRASP's proposal). Intervals are Welch 95% t intervals of the difference.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import scipy.sparse as sp
from scipy.stats import t as student


def ranked_draws(store, draws: int, top: int, dedup: bool, seed: int = 900_000):
    """Returns (sketches, draws as sketch rows, {ranker: indices of its top draws}); the last
    2·top draws are the whole pool's random_at_counts, which no ranker ranks."""
    import polars as pl

    from grasp_pipeline.config import LoopParams
    from grasp_pipeline.corpus import near_duplicate_mask
    from grasp_pipeline.mixture import domain_stats, natural_mixture
    from grasp_pipeline.selection import mixture_counts
    from grasp_pipeline.stages.tables import load_subset_data, natural_weights
    from grasp_pipeline.surrogates import Datamodel, GradDot, Grasp, SubsetData, Trak
    from grasp_pipeline.training.controls import random_at_counts

    data, sketches, _ = load_subset_data(store)
    configs = {m: {k: v for k, v in json.loads(c).items() if k != "method"}
               for m, c in store.read("surrogates").unique("method").select("method", "config").iter_rows()}
    domains = sketches["domain"].to_numpy()
    stats = domain_stats(data.pool_sketch, domains, natural_weights(store))
    budget = int(store.read("curation_rounds").filter(pl.col("kind") == "selection")["budget"][0])
    counts = mixture_counts(natural_mixture(stats), stats.domains, budget,
                            {d: int(c) for d, c in zip(stats.domains, stats.counts)})
    pool = sketches.select("example_id").join(store.read("corpus_shards").select("example_id", "content_sha1", "text"),
                                              on="example_id", how="left", maintain_order="left")
    content = pool["content_sha1"].to_numpy()
    keep = ~near_duplicate_mask(pool["text"].to_list(), LoopParams().near_duplicate_threshold) if dedup else None
    rows = [random_at_counts(domains, counts, seed + i, content=content, keep=keep) for i in range(draws)]
    rows += [random_at_counts(domains, counts, seed - 100_000 + i, content=content) for i in range(2 * top)]
    n, m = data.pool_sketch.shape[0], len(rows)
    extra = sp.csr_matrix((np.ones(sum(map(len, rows))), (np.repeat(np.arange(m), [len(r) for r in rows]),
                                                          np.concatenate(rows))), shape=(m, n))
    # the draws as extra subsets of role "draw": fits read the fit rows only, so they never see them
    with_draws = SubsetData(np.concatenate([data.subset_ids, -1 - np.arange(m)]),
                            np.concatenate([data.roles, np.full(m, "draw")]),
                            np.concatenate([data.samplers, np.full(m, "draw")]),
                            np.concatenate([data.sizes, np.full(m, budget)]),
                            sp.vstack([data.membership, extra]).tocsr(),
                            np.vstack([data.utility, np.full((m, len(data.tasks)), np.nan)]), data.pool_sketch,
                            data.task_sketch, data.tasks, sketch_blocks=data.sketch_blocks)

    def predicted(model) -> np.ndarray:
        params = [model.fit(with_draws, data.fit_rows, t) for t in range(len(data.tasks))]
        return model.predict_tasks(with_draws, params)[len(data.subset_ids):len(data.subset_ids) + draws].mean(1)

    scores = {f"grasp_b{b}": predicted(Grasp(**{**configs["grasp"], "sketch_block": b}))
              for b in range(data.sketch_blocks)}
    scores["grasp_ensemble"] = np.mean(list(scores.values()), axis=0)
    scores["datamodel"] = predicted(Datamodel(**configs["datamodel"]))
    scores["trak"] = predicted(Trak(**configs["trak"]))
    scores["grad_dot"] = predicted(GradDot(**configs["grad_dot"]))
    loss = sketches["loss"].to_numpy().astype(np.float64)
    scores["low_loss"] = -np.array([loss[r].mean() for r in rows[:draws]])
    picks = {name: list(np.argsort(-s, kind="stable")[:top]) for name, s in scores.items()}
    picks["random_kept"] = list(range(top))
    picks["random_at_counts"] = list(range(draws, draws + 2 * top))
    return sketches, rows, picks, {"budget": budget, "pool_kept": int(keep.sum()) if dedup else n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--dedup", action="store_true")
    args = parser.parse_args()
    from grasp_pipeline.config import WorkloadParams
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.stages.tables import encoded_pool_and_tasks, outcome_recipe
    from grasp_pipeline.training.retrain import TrainJob, train_jobs

    store = DeltaStore(args.root)
    sketches, rows, picks, facts = ranked_draws(store, args.draws, args.top, args.dedup)
    workload = WorkloadParams().build()
    recipe = outcome_recipe(store.read("subset_outcomes"))
    pool, pool_inputs, task_inputs, tasks, task_index = encoded_pool_and_tasks(store, workload, "dev")
    position = {e: i for i, e in enumerate(pool["example_id"].to_list())}
    to_pool = np.array([position[e] for e in sketches["example_id"].to_list()])
    trained = sorted({i for chosen in picks.values() for i in chosen})
    jobs = [TrainJob(np.sort(to_pool[rows[i]]), (recipe.data_order_seed + r, 10_000_000))
            for i in trained for r in (0, 1)]
    losses, _ = train_jobs(workload, recipe, pool_inputs, jobs, task_inputs, task_index, tasks, models_per_batch=4,
                           workers=0, label="retraining ranked draws")
    utility = dict(zip(trained, (-losses).reshape(len(trained), 2, len(tasks)).mean(axis=(1, 2))))
    reference = np.array([utility[i] for i in picks["random_at_counts"]])
    sd = float(reference.std(ddof=1))
    rankers = {}
    for name, chosen in picks.items():
        x = np.array([utility[i] for i in chosen])
        diff = float(x.mean() - reference.mean())
        half = float(student.ppf(0.975, min(len(x), len(reference)) - 1)
                     * np.sqrt(x.var(ddof=1) / len(x) + reference.var(ddof=1) / len(reference)))
        rankers[name] = {"gain": diff, "ci_low": diff - half, "ci_high": diff + half, "in_sd": diff / sd}
        print(f"{name:16s} {diff:+.4f} [{diff - half:+.4f}, {diff + half:+.4f}] ({diff / sd:+.2f} sd)", file=sys.stderr)
    print(json.dumps({**facts, "draws": args.draws, "top": args.top, "dedup": args.dedup,
                      "random_at_counts_sd": sd, "retrained_models": len(jobs), "rankers": rankers,
                      "ratios": {f"{name}_gain_in_sd": r["in_sd"] for name, r in rankers.items()
                                 if name != "random_at_counts"}}, indent=1))


if __name__ == "__main__":
    main()

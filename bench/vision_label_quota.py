"""Selection on a classification workload, with and without the per-label quota.

    grasp run --workload vision --root ROOT        # first: any finished vision run
    python bench/vision_label_quota.py ROOT [--task-weight rotated=1 ...]

Prints one JSON object: per-task retrained utility (validation recipe and seeds, as
`selection_validation`) of `grasp` and `grad_dot` selections (and `datamodel`, balanced) at the run's budget without a
label quota (`*_unbalanced`) and with at most ceil(budget/labels) per digit label
(`*_label_balanced`, what `selection.balance_labels = true` does in the pipeline), and the
run's random selections. Gradient-based selection at θ₀ favours the worst-fitted classes;
the comparison measures how much of the gap to random that imbalance explains.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import polars as pl


def main() -> None:
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.selection import grasp_selection, label_quota, random_selection, task_weight_vector, top_k
    from grasp_pipeline.surrogates import GradDot
    from grasp_pipeline.training.retrain import Recipe, StackedTrainer, task_losses
    from grasp_pipeline.workloads import make_workload
    from grasp_pipeline.workloads.vision import text_to_image

    parser = argparse.ArgumentParser()
    parser.add_argument("root", help="storage root of a finished vision run")
    parser.add_argument("--task-weight", action="append", default=[], metavar="TASK=WEIGHT")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    store = DeltaStore(args.root)
    workload_config = json.loads(store.read("reference_models")["workload"][0])
    workload = make_workload("vision", **{k: v for k, v in workload_config.items() if k != "workload"})
    sketches = store.read("gradient_sketches").sort("example_id")
    pool = store.read("corpus_shards").sort("example_id")
    labels = np.array([text_to_image(t)[0] for t in pool["text"]])
    z = np.asarray(sketches["sketch"].to_list(), float)
    task_frame = store.read("task_sketches").sort("task")
    q = np.asarray(task_frame["sketch"].to_list(), float)
    surrogates = store.read("surrogates").sort("task")
    grasp = [json.loads(p) for p in surrogates.filter(pl.col("method") == "grasp")["params"]]
    grad_dot = [json.loads(p) for p in surrogates.filter(pl.col("method") == "grad_dot")["params"]]
    weights = task_weight_vector(task_frame["task"].to_list(),
                                 {k: float(v) for k, v in (w.split("=") for w in args.task_weight)})
    budget = int(store.read("curated_selections").filter(pl.col("method") == "grasp")["budget"][0])
    quota = label_quota(labels, budget)
    scores = GradDot.weighted_example_scores(z, q, grad_dot, weights)
    content = pool["content_sha1"].to_numpy()  # the pipeline's default content dedup
    selections = {
        "grasp_unbalanced": grasp_selection(z, q, grasp, weights, budget, content=content).rows,
        "grasp_label_balanced": grasp_selection(z, q, grasp, weights, budget, content=content, domains=labels,
                                                max_per_domain=quota).rows,
        "grad_dot_unbalanced": top_k(scores, budget).rows,
        "grad_dot_label_balanced": top_k(scores, budget, groups=labels, max_per_group=quota).rows,
        **{f"random-{s}": random_selection(len(z), budget, s).rows for s in range(3)},
    }
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    datamodel_scores = np.zeros(len(z))
    for w, p in zip(weights, surrogates.filter(pl.col("method") == "datamodel")["params"]):
        p = json.loads(p)
        datamodel_scores[[position[e] for e in p["example_ids"]]] += w * np.asarray(p["weights"])
    selections["datamodel_label_balanced"] = top_k(datamodel_scores, budget, groups=labels, max_per_group=quota).rows
    recipe_json = json.loads(store.read("subset_outcomes")["recipe"][0])
    recipe = Recipe(**{k: recipe_json[k] for k in Recipe.__dataclass_fields__})
    tasks = store.read("task_sets").sort("task", "example_id")
    names = sorted(tasks["task"].unique().to_list())
    task_index = np.searchsorted(np.asarray(names), tasks["task"].to_numpy())
    pool_inputs, task_inputs = workload.encode(pool["text"].to_list()), workload.encode(tasks["text"].to_list())
    trainer = StackedTrainer(workload, recipe)
    keys = list(selections)
    losses = np.zeros((len(keys), len(names)))
    for repeat in range(args.repeats):  # the validation stage's seeds: common random numbers
        trained = trainer.train(pool_inputs, [selections[k] for k in keys],
                                [(recipe.data_order_seed + repeat, 10_000_000)] * len(keys))
        losses += task_losses(trainer.example_losses(trained, task_inputs), task_index, names) / args.repeats
    utility = {k: dict(zip(names, (-losses[j]).round(4).tolist())) for j, k in enumerate(keys)}
    random_mean = -losses[[keys.index(f"random-{s}") for s in range(3)]].mean(axis=0)
    print(json.dumps({
        "root": args.root, "budget": budget, "label_quota": quota, "task_weights": dict(zip(names, weights.tolist())),
        "utility": utility,
        "mean_utility": {k: round(float(-losses[j].mean()), 4) for j, k in enumerate(keys)},
        "weighted_utility": {k: round(float(-(losses[j] * weights).sum()), 4) for j, k in enumerate(keys)},
        "random_mean": dict(zip(names, random_mean.round(4).tolist())),
        "tasks_beating_random_mean": {k: int((-losses[j] > random_mean).sum()) for j, k in enumerate(keys)},
        "classes_selected": {k: int(len(np.unique(labels[selections[k]]))) for k in keys},
    }, indent=1))


if __name__ == "__main__":
    main()

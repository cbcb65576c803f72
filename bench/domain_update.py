"""Domain-set update against full recomputation, on the held-out test: utility reached, compute spent.

    python bench/domain_update.py [--quick] [--profile smoke|demo] [--new-domains A,B] [--keep-dir DIR]

Prints ONE JSON object on stdout (progress goes to stderr) with a top-level `ratios` object.

1. The embedded corpus is split by a rule fixed before any result: the "new" domains are the
   last two in sorted order (`--new-domains` names others). The old corpus is every other
   domain's documents, the full corpus all of them (both written as JSONL from the same
   documents, so an old domain has the same examples in both).
2. Root A: the pipeline up to the mixture on the old corpus (corpus → θ₀ → sketches → plan →
   retraining → surrogate → mixture; the loop and curation are not needed by an update).
3. Root B, full recomputation on the full corpus: new θ₀, sketches, plan, retrainings, fit,
   the closed loop (`grasp` is its pick) and the mixture (`grasp_optimum`, `natural`).
4. `mixture_update` on A with the full corpus: sketches only the new domains, refits no fitted task, and
   retrains `mixture_update.check_samples` samples of each candidate on dev to pick one.
5. Scoring, as `curation_test` scores mixtures (its `train_and_score`, fresh test seeds, sample
   j of every mixture paired with natural's sample j, paired bootstrap intervals): natural,
   B's `grasp` and `grasp_optimum`, and A's `grasp_update`, all sampled from B's pool and
   scored on B's `test` task examples. Nothing before this step reads a test row.

Ratios: `update_gain_over_full_gain` (the update's mean test gain over natural / B's `grasp`
gain), `update_gain_over_optimum_gain` (/ B's `grasp_optimum` gain), retraining seconds
(update: its dev check's; full: B's subset_outcomes + curation_loop stage seconds), and
the update's wall seconds over B's sketching (θ₀ + pool and task sketches) and over all of B.
`--quick` is `--profile smoke`; the default is the demo profile.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grasp_pipeline import stages  # noqa: E402
from grasp_pipeline.config import load_params, with_overrides  # noqa: E402
from grasp_pipeline.corpus import load_documents  # noqa: E402
from grasp_pipeline.evaluation.held_out import paired_gains  # noqa: E402
from grasp_pipeline.infra.storage import DeltaStore  # noqa: E402
from grasp_pipeline.mixture import sample_mixture  # noqa: E402
from grasp_pipeline.stages.curation_test import MIXTURE_ORDER_KEY, train_and_score  # noqa: E402
from grasp_pipeline.stages.tables import outcome_recipe, read_pool, read_tasks  # noqa: E402

UNTIL_MIXTURE = ["corpus_shards", "reference_model", "gradient_sketches", "task_sketches", "subset_plan",
                 "subset_outcomes", "surrogates", "mixture_weights"]
FULL = UNTIL_MIXTURE[:-1] + ["curation_loop", "mixture_weights"]  # + the loop, whose pick is `grasp`
RETRAINING_STAGES = ("subset_outcomes", "curation_loop")
SKETCHING_STAGES = ("reference_model", "gradient_sketches", "task_sketches")


def log(message: str) -> None:
    print(f"[domain_update] {message}", file=sys.stderr, flush=True)


def write_corpora(folder: Path, new_domains: list[str] | None) -> tuple[Path, Path, list[str], list[str]]:
    """Writes old.jsonl.gz (without the new domains) and full.jsonl.gz from the embedded corpus;
    returns (old path, full path, old domains, new domains)."""
    documents, _ = load_documents(None)
    domains = sorted(documents["domain"].unique().to_list())
    new = new_domains or domains[-2:]  # the rule, fixed before any result: the last two in sorted order
    unknown = sorted(set(new) - set(domains))
    if unknown:
        raise SystemExit(f"--new-domains {unknown} are not domains of the embedded corpus {domains}")
    records = documents.rename({"doc_id": "id"})
    paths = (folder / "old.jsonl.gz", folder / "full.jsonl.gz")
    for path, frame in zip(paths, (records.filter(~pl.col("domain").is_in(new)), records)):
        with gzip.open(path, "wt", encoding="utf-8") as out:
            for row in frame.iter_rows(named=True):
                out.write(json.dumps({k: v for k, v in row.items() if v is not None}, ensure_ascii=False) + "\n")
    return paths[0], paths[1], [d for d in domains if d not in new], list(new)


def run_stages(store: DeltaStore, params, names: list[str], label: str) -> dict[str, float]:
    """Runs the named stages in graph order; returns their wall seconds."""
    seconds = {}
    for name, run in stages.stage_plan(store, params, params.workload.build()):
        if name in names:
            began = time.perf_counter()
            run()
            seconds[name] = round(time.perf_counter() - began, 2)
            log(f"{label} {name}: {seconds[name]} s")
    return seconds


def mixtures_to_test(root_b: DeltaStore, root_a: DeltaStore) -> tuple[dict[str, tuple[list, np.ndarray]], int]:
    """({method: (domains, weights)} of natural, grasp, grasp_optimum (root B) and grasp_update (root A),
    their budget)."""
    weights = root_b.read("mixture_weights").sort("domain")
    out = {m: (rows["domain"].to_list(), rows["weight"].to_numpy())
           for (m,), rows in weights.group_by("method", maintain_order=True)
           if m in ("natural", "grasp", "grasp_optimum")}
    update = root_a.read("mixture_updates").sort("domain")
    out["grasp_update"] = (update["domain"].to_list(), update["weight"].to_numpy())
    budgets = set(weights["budget"].to_list()) | set(update["budget"].to_list())
    if len(budgets) != 1:
        raise SystemExit(f"the mixtures have budgets {sorted(budgets)}; the comparison needs one")
    return out, budgets.pop()


def score_mixtures(store: DeltaStore, params, mixtures: dict, budget: int) -> dict:
    """{method: paired test gains over natural (curation_test's statistics)}, each mixture sampled
    `test.mixture_samples` times from root B's pool, trained with fresh test seeds."""
    test_params = params.test
    pool = read_pool(store)
    test, tasks, task_index = read_tasks(store, "test")
    recipe = outcome_recipe(store.read("subset_outcomes"))
    pairs = [(i, o) for i in test_params.init_seeds for o in test_params.data_order_seeds]
    domains = pool["domain"].to_numpy()
    jobs = []
    for method, (names, pi) in mixtures.items():
        for j in range(test_params.mixture_samples):
            rows = sample_mixture(domains, pi, names, budget, test_params.mixture_seed + j)
            pair = pairs[j % len(pairs)]
            jobs.append(((method, j), rows, pair, (pair[1], MIXTURE_ORDER_KEY + j)))
    losses = train_and_score(params.workload.build(), recipe, pool, test, task_index, tasks, jobs, test_params)
    utility = {method: -np.stack([losses[((method, j), pairs[j % len(pairs)])]
                                  for j in range(test_params.mixture_samples)]) for method in mixtures}
    boot = {"bootstrap": test_params.bootstrap, "seed": test_params.bootstrap_seed, "level": test_params.level}
    out = {}
    for method in mixtures:
        stats = paired_gains(utility[method], utility["natural"], **boot)
        out[method] = {"mean_utility": float(stats["utility"].mean()), "gain": stats["mean_gain"],
                       "ci": list(stats["mean_ci"]), "tasks_ahead": int((stats["gain"] > 0).sum()),
                       "per_task_gain": dict(zip(tasks, stats["gain"].round(5).tolist()))}
    return out


def ratio(numerator, denominator):
    return None if numerator is None or not denominator else float(numerator) / float(denominator)


@contextlib.contextmanager
def work_dir(keep: str | None):
    if keep:
        os.makedirs(keep, exist_ok=True)
        yield Path(keep)
        return
    with tempfile.TemporaryDirectory(prefix="domain_update-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke profile")
    parser.add_argument("--profile", choices=["smoke", "demo"])
    parser.add_argument("--config", help="JSON or TOML overrides")
    parser.add_argument("--new-domains", help="comma-separated domains that arrive later (default: the last two)")
    parser.add_argument("--keep-dir", help="keep the corpora and both roots here")
    args = parser.parse_args()
    profile = args.profile or ("smoke" if args.quick else "demo")
    base = load_params(profile, args.config)
    began = time.perf_counter()
    with work_dir(args.keep_dir) as folder:
        old, full, old_domains, new_domains = write_corpora(
            folder, args.new_domains.split(",") if args.new_domains else None)
        params_a = with_overrides(base, {"corpus": {"corpus_path": str(old)}})
        params_b = with_overrides(base, {"corpus": {"corpus_path": str(full)}})
        root_a, root_b = DeltaStore(str(folder / "root_a")), DeltaStore(str(folder / "root_b"))
        seconds_a = run_stages(root_a, params_a, UNTIL_MIXTURE, "A (old corpus)")
        seconds_b = run_stages(root_b, params_b, FULL, "B (full recomputation)")
        update_began = time.perf_counter()
        result = stages.run_mixture_update(root_a, params_a.workload.build(), replace(params_a.corpus,
                                                                                      corpus_path=str(full)),
                                           params_a.workload.example_bytes, params_a.mixture, params_a.mixture_update)
        update_seconds = round(time.perf_counter() - update_began, 2)
        log(f"mixture_update on A: {update_seconds} s, {result.metrics['sketched_examples']} examples sketched")
        mixtures, budget = mixtures_to_test(root_b, root_a)
        scored = score_mixtures(root_b, params_b, mixtures, budget)
        update_row = root_a.read("mixture_updates").row(0, named=True)
    gain = {m: s["gain"] for m, s in scored.items()}
    full_retrain = sum(seconds_b.get(s, 0.0) for s in RETRAINING_STAGES)
    full_sketch = sum(seconds_b.get(s, 0.0) for s in SKETCHING_STAGES)
    ratios = {"update_gain_over_full_gain": ratio(gain["grasp_update"], gain.get("grasp")),
              "update_gain_over_optimum_gain": ratio(gain["grasp_update"], gain["grasp_optimum"]),
              "update_retrain_seconds_over_full": ratio(update_row["retrain_seconds"], full_retrain),
              "update_seconds_over_full_sketch_seconds": ratio(update_seconds, full_sketch),
              "update_seconds_over_full_seconds": ratio(update_seconds, sum(seconds_b.values()))}
    print(json.dumps({
        "profile": profile, "old_domains": old_domains, "new_domains": new_domains, "budget": budget,
        "ratios": ratios, "test": scored,
        "weights": {m: dict(zip(names, np.round(pi, 4).tolist())) for m, (names, pi) in mixtures.items()},
        "update": {"seconds": update_seconds,
                   **{k: update_row[k] for k in ("sketched_examples", "sketched_task_examples", "new_domains",
                                                  "candidate", "candidates", "candidate_dev_gains",
                                                  "retrained_models", "retrain_seconds",
                                                  "revised_domains", "removed_domains", "prior_tasks",
                                                  "predicted_utility", "natural_predicted_utility")}},
        "stage_seconds": {"A": seconds_a, "B": seconds_b},
        "retrain_seconds": {"update": update_row["retrain_seconds"], "full": full_retrain},
        "sketch_seconds": {"full": full_sketch},
        "total_seconds": round(time.perf_counter() - began, 1),
    }, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Curation-loop stage: rounds of propose → retrain on dev → refit, and the LCB pick (grasp_pipeline/training/loop.py).

Writes `curation_rounds` (every candidate: round, setting, predicted and realised gain over
random, its lower bound, the pick) and `active_outcomes` (each retrained candidate subset as
sampler `active`, role `fit`, per task). Earlier runs' active outcomes are reused when they are
compatible — the same recipe and workload, the same reference model, the same dev examples,
members all in the pool — so a scheduled run starts from a bigger fit set; others are kept in
the table but not used, and the metrics say how many of each.
"""

from __future__ import annotations

import hashlib
import json
from functools import partial

import numpy as np
import polars as pl

from ..config.params import LoopParams
from ..corpus.near_duplicates import near_duplicate_mask
from ..infra import progress
from ..infra.storage import DeltaStore
from ..mixture import MixtureObjective, domain_stats
from ..selection import label_balanced_cells, random_selection, task_weight_vector
from ..training.controls import counts_of, quality_filter, random_at_counts
from ..training.loop import (
    Candidate,
    LoopState,
    adapt,
    bootstrap_refits,
    calibration_slope,
    lower_bounds,
    predicted_mean_utility,
    propose,
    propose_random,
    realised_lower_bound,
    refit,
    with_active,
)
from ..training.retrain import TrainJob, train_jobs
from ..workloads.base import Workload
from .base import StageResult, stage
from .tables import (
    check_one_model,
    encoded_pool_and_tasks,
    load_subset_data,
    members_digest,
    natural_weights,
    outcome_recipe,
    run_caps,
)

LOOP_ORDER_KEY = 40_000_000  # data-order key of the loop's retrainings (common random numbers)


@stage
def run_curation_loop(store: DeltaStore, workload: Workload, params: LoopParams) -> StageResult:
    """Runs `loop.rounds` rounds and picks a selection and a mixture; writes curation_rounds, active_outcomes."""
    data, sketches, _ = load_subset_data(store)
    check_one_model(store)
    surrogates = store.read("surrogates").filter(pl.col("method") == "grasp").sort("task")
    config, surrogate_id = json.loads(surrogates["config"][0]), surrogates["surrogate_id"][0]
    recipe = outcome_recipe(store.read("subset_outcomes"))
    recipe_json = store.read("subset_outcomes")["recipe"][0]
    pool, pool_inputs, dev_inputs, tasks, task_index = encoded_pool_and_tasks(store, workload, "dev")
    key = _outcome_key(store, recipe_json, sketches["model_version"][0])
    z = data.pool_sketch
    domains, budget = sketches["domain"].to_numpy(), max(1, int(round(params.budget_fraction * len(z))))
    natural = natural_weights(store)
    stats = domain_stats(z, domains, natural)
    caps = _mixture_caps(store, stats, budget, params)
    content = (pool.select("example_id", "content_sha1").join(sketches.select("example_id"), on="example_id",
                                                              how="right")["content_sha1"].to_numpy())
    # classification pools: the selection candidates balance labels, as every score-based selection does
    labels = (pool.select("example_id", "label").join(sketches.select("example_id"), on="example_id", how="right")
              ["label"].to_numpy() if "label" in pool.columns else None)
    earlier, reused, refused = _earlier_outcomes(store, sketches, tasks, key)
    data = with_active(data, *earlier)
    def train(subsets, orders):
        return _train(workload, recipe, pool_inputs, dev_inputs, task_index, tasks, subsets, orders, params)
    # random references: a random sample of the corpus, at its proportions
    references = [random_selection(len(z), budget, seed, domains=domains, natural=natural).rows
                  for seed in params.random_seeds]
    seeds = list(params.order_seeds)
    ref_utility = train([rows for rows in references for _ in seeds], seeds * len(references)).reshape(
        len(references), len(seeds), len(tasks))
    ref_mean = ref_utility.mean((0, 1))  # (T,) over references and seeds
    last_block = data.sketch_blocks - 1 if data.sketch_blocks > 1 else -1
    blocks = list(params.selection_blocks) or sorted({config.get("sketch_block", -1), last_block})
    state = LoopState(data, config, list(params.trust_radii), list(params.mixture_steps), selection_blocks=blocks,
                      weights=task_weight_vector(data.tasks, dict(params.task_weights)),
                      search=params.selection_search, screen_draws=params.screen_draws)
    if params.grasp_filter_share >= 0:
        state.excluded = np.flatnonzero(~_kept(_unique(pool, sketches, params), sketches, params.grasp_filter_share))
    evaluate = partial(_evaluate, weights=state.weights, stats=stats, budget=budget, ref_mean=ref_mean, train=train,
                       order_seeds=params.order_seeds)
    with progress.task("rounds", total=params.rounds, unit="round") as rounds:
        for round_ in range(params.rounds):
            rounds.at(round_)  # the round goes into its retraining lines: "curation_loop › round 1 › …"
            _round(state, round_, params, evaluate, references, recipe_json, stats, domains, budget, caps, content,
                   labels)
            rounds.advance()
    refits = bootstrap_refits(state.data, state.config, params.bootstrap, params.seed)
    pick = partial(_pick, state, params, refits, stats, budget, references, ref_utility)
    pick("grasp")
    if params.controls:
        pick("random_pick")
        groups = domains if labels is None else label_balanced_cells({}, domains, labels)[0]
        state.candidates += _filter_dedup(state, params, pool, sketches, groups, content, references, evaluate)
        pick("filter_dedup")
    result = StageResult()
    result.write(store, "curation_rounds", _rounds_frame(state, surrogate_id, budget, stats.domains, pool, params))
    result.write(store, "active_outcomes", _active_frame(store, state, sketches, tasks, key))
    result.metrics = _loop_metrics(state, reused, refused)
    return result


def _mixture_caps(store: DeltaStore, stats, budget: int, params: LoopParams) -> np.ndarray:
    """(D,) the most of a mixture each domain may supply: what a sample can take from the pool, and what
    the target run may repeat of the corpus (loop.training_bytes, loop.max_epochs)."""
    return np.minimum(np.minimum(1.0, stats.counts / budget),
                      run_caps(store, stats.domains, params.training_bytes, params.max_epochs))


def _outcome_key(store: DeltaStore, recipe_json: str, model_version: str) -> dict:
    """What an active outcome was measured under (recipe, reference model, dev examples): only outcomes
    of the same key are reused by a later run."""
    dev_sha1 = hashlib.sha1("\n".join(sorted(store.read("task_sets").filter(pl.col("split") == "dev")
                                             ["content_sha1"].to_list())).encode()).hexdigest()[:16]
    return {"recipe": recipe_json, "model_version": model_version, "dev_sha1": dev_sha1}


def _round(state: LoopState, round_: int, params: LoopParams, evaluate, references: list[np.ndarray],
           recipe_json: str, stats, domains: np.ndarray, budget: int, caps: np.ndarray, content: np.ndarray,
           labels: np.ndarray | None) -> None:
    """One round: refit, GRASP's proposals (and the random_pick control's), retrain them all on dev; only
    GRASP's join the fit set and move the trust."""
    config = state.config
    fitted = refit(state.data, config, state.data.fit_rows)
    base = predicted_mean_utility(fitted, state.data, references, state.weights).mean()
    candidates = propose(state, fitted, stats, domains, budget, caps, round_, params.mixture_samples,
                         params.seed, content, labels)
    if params.controls:  # the same proposals' budget spent without the surrogate (training/controls.py)
        candidates += propose_random(state, stats, domains, budget, caps, round_, params.mixture_samples,
                                     params.seed, content, labels, params.control_concentration)
    trained = evaluate(candidates, fitted, state.data, base=base)
    mine = [(rows, utility) for cand, rows, utility in trained if cand.proposer == "grasp"]
    ids = np.array([_active_id(rows, recipe_json) for rows, _ in mine], np.int64)
    state.data = with_active(state.data, [rows for rows, _ in mine], np.stack([u for _, u in mine]), ids)
    grasp = [c for c in candidates if c.proposer == "grasp"]
    slope = calibration_slope([c.predicted_gain for c in grasp], [c.realised_gain for c in grasp])
    state.calibration.append({"round": round_, "slope": slope, "trust": list(state.trust),
                              "steps": list(state.steps)})
    adapt(state, slope)
    state.candidates += candidates


def _filter_dedup(state: LoopState, params: LoopParams, pool: pl.DataFrame, sketches: pl.DataFrame,
                  groups: np.ndarray, content: np.ndarray, references: list[np.ndarray],
                  evaluate) -> list[Candidate]:
    """The `filter_dedup` control's candidates, retrained on dev: for each share in `loop.filter_shares`,
    random members at the GRASP pick's counts from the pool left after exact and near-duplicate removal
    and dropping that share of each domain's highest reference-model losses."""
    pick = next(c for c in state.candidates if c.chosen and c.kind == "selection" and c.proposer == "grasp")
    counts = counts_of(groups, pick.subsets[0])
    out = []
    unique = _unique(pool, sketches, params)
    for i, share in enumerate(params.filter_shares):
        keep = _kept(unique, sketches, share)
        rows = random_at_counts(groups, counts, params.seed + 9000 + i, content=content, keep=keep)
        out.append(Candidate(f"filter-dedup-{share:g}", "selection", pick.round, {"drop_share": share},
                             pick.weights, [rows], proposer="filter_dedup"))
    fitted = refit(state.data, state.config, state.data.fit_rows)  # the refit that has seen every round
    evaluate(out, fitted, state.data, base=predicted_mean_utility(fitted, state.data, references, state.weights).mean())
    return out


def _unique(pool: pl.DataFrame, sketches: pl.DataFrame, params: LoopParams) -> np.ndarray:
    """Rows (in sketch order) that are neither an exact nor a near duplicate of an earlier one."""
    texts = pool.select("example_id", "text").join(sketches.select("example_id"), on="example_id",
                                                   how="right")["text"].to_list()
    return ~near_duplicate_mask(texts, params.near_duplicate_threshold)


def _kept(unique: np.ndarray, sketches: pl.DataFrame, share: float) -> np.ndarray:
    """The unique rows left after dropping `share` of each domain's highest reference-model losses:
    filter_dedup's pool, and GRASP's with loop.grasp_filter_share."""
    return unique & quality_filter(sketches["loss"].to_numpy(), sketches["domain"].to_numpy(), share)


def _pick(state: LoopState, params: LoopParams, refits: list[list[dict]], stats, budget: int,
          references: list[np.ndarray], ref_utility: np.ndarray, proposer: str) -> None:
    """Fills the proposer's candidates' lower bounds and marks its pick of each kind (`chosen`) and what
    stopping after each round would have picked (`best_by_round`): the same rule for GRASP and the controls."""
    mine = [c for c in state.candidates if c.proposer == proposer]
    for cand, bound in zip(mine, lower_bounds(mine, refits, state.data, stats, budget, references, params.lcb_z,
                                              state.weights)):
        cand.lcb = float(bound)
        cand.realised_lcb = realised_lower_bound(cand.units, ref_utility, params.lcb_z, 200, params.seed,
                                                 state.weights)
    def best(among):  # the highest bound under the pick rule; a tie goes to the earlier candidate
        bound = (lambda c: c.lcb) if params.pick == "predicted" else (lambda c: c.realised_lcb)
        return max(among, key=lambda c: (bound(c), -state.candidates.index(c)))
    for kind in ("mixture", "selection"):
        of_kind = [c for c in mine if c.kind == kind]
        if not of_kind:
            continue
        best(of_kind).chosen = True
        for round_ in sorted({c.round for c in of_kind}):
            best([c for c in of_kind if c.round <= round_]).best_by_round.append(round_)


def _train(workload: Workload, recipe, pool_inputs, dev_inputs, task_index: np.ndarray, tasks: list[str],
           subsets: list[np.ndarray], orders, params: LoopParams) -> np.ndarray:
    """(len(subsets), T) dev utility of the recipe trained on each subset with data-order seed orders[i]."""
    jobs = [TrainJob(rows, (int(o), LOOP_ORDER_KEY)) for rows, o in zip(subsets, orders)]
    losses, _ = train_jobs(workload, recipe, pool_inputs, jobs, dev_inputs, task_index, tasks,
                           models_per_batch=params.models_per_batch, workers=params.workers,
                           label="retraining candidates")
    return -losses


def _evaluate(candidates: list[Candidate], fitted: list[dict], data, *, base: float, weights: np.ndarray, stats,
              budget: int, ref_mean: np.ndarray, train, order_seeds) -> list[tuple[Candidate, np.ndarray, np.ndarray]]:
    """Retrains every candidate on dev, fills its predicted and realised gains (over random, the tasks
    weighted by the target `weights`) and its retrainings, and returns (candidate, subset, seed-mean
    utility) per trained subset."""
    seeds = list(order_seeds)
    jobs = [(c, j, rows, seeds[j % len(seeds)] if cand.kind == "mixture" else seed)
            for c, cand in enumerate(candidates) for j, rows in enumerate(cand.subsets)
            for seed in (seeds if cand.kind == "selection" else [None])]
    utility = train([rows for _, _, rows, _ in jobs], [seed for *_, seed in jobs])
    objective = MixtureObjective(stats, data.task_sketch, fitted, weights, budget)
    out = []
    for c, cand in enumerate(candidates):
        mine = [i for i, job in enumerate(jobs) if job[0] == c]
        per_subset = {}
        for i in mine:
            per_subset.setdefault(jobs[i][1], []).append(utility[i])
        means = [np.mean(per_subset[j], axis=0) for j in sorted(per_subset)]
        cand.units = np.stack([utility[i] for i in mine])
        cand.retrainings = len(mine)
        cand.realised_per_task = np.mean(means, axis=0) - ref_mean
        cand.realised_gain = float(weights @ cand.realised_per_task)
        predicted = objective(cand.weights) if cand.kind == "mixture" else \
            predicted_mean_utility(fitted, data, cand.subsets, weights)[0]
        cand.predicted_gain = float(predicted - base)
        out += [(cand, cand.subsets[j], means[k]) for k, j in enumerate(sorted(per_subset))]
    return out


def _active_id(rows: np.ndarray, recipe_json: str) -> int:
    """A stable int64 id of an active subset: its sorted pool rows and the recipe it was trained with."""
    digest = hashlib.sha1(np.sort(np.asarray(rows, np.int64)).tobytes() + recipe_json.encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 62) - 1) | (1 << 62)  # never a plan subset_id


ACTIVE_SCHEMA = {"subset_id": pl.Int64, "sampler": pl.Utf8, "role": pl.Utf8, "size": pl.Int64,
                 "members": pl.List(pl.Int64), "task": pl.Utf8, "utility": pl.Float64, "recipe": pl.Utf8,
                 "model_version": pl.Utf8, "dev_sha1": pl.Utf8, "members_sha1": pl.Utf8}


def _earlier_outcomes(store: DeltaStore, sketches: pl.DataFrame, tasks: list[str], key: dict):
    """((pool rows, (s, T) utility, ids) of the compatible earlier active subsets, reused, refused)."""
    empty = ([], np.zeros((0, len(tasks))), np.zeros(0, np.int64))
    if not store.exists("active_outcomes"):
        return empty, 0, 0
    earlier = store.read("active_outcomes")
    position = {eid: i for i, eid in enumerate(sketches["example_id"].to_list())}
    compatible = earlier.filter((pl.col("recipe") == key["recipe"]) & (pl.col("model_version") == key["model_version"])
                                & (pl.col("dev_sha1") == key["dev_sha1"]))
    wide = compatible.pivot(on="task", index=["subset_id", "members"], values="utility")
    usable = wide.filter(pl.all_horizontal(pl.col(t).is_not_null() for t in tasks if t in wide.columns)) \
        if set(tasks) <= set(wide.columns) else wide.clear()
    usable = usable.filter(pl.col("members").map_elements(lambda m: all(e in position for e in m),
                                                          return_dtype=pl.Boolean)) if usable.height else usable
    subsets = [np.array([position[e] for e in m]) for m in usable["members"].to_list()]
    total = earlier["subset_id"].n_unique()
    found = (subsets, usable.select(tasks).to_numpy().astype(float) if usable.height else empty[1],
             usable["subset_id"].to_numpy() if usable.height else empty[2])
    return found, usable.height, total - usable.height


def _active_frame(store: DeltaStore, state: LoopState, sketches: pl.DataFrame, tasks: list[str],
                  key: dict) -> pl.DataFrame:
    """Every earlier active row (compatible or not, kept) plus this run's, one row per (subset, task)."""
    data = state.data
    ids = sketches["example_id"].to_numpy()
    active = np.flatnonzero(data.samplers == "active")
    rows = []
    for r in active:
        members = np.sort(ids[data.membership[r].indices]).astype(np.int64)
        rows += [{"subset_id": int(data.subset_ids[r]), "sampler": "active", "role": "fit", "size": len(members),
                  "members": members.tolist(), "task": task, "utility": float(data.utility[r, t]),
                  "recipe": key["recipe"], "model_version": key["model_version"], "dev_sha1": key["dev_sha1"],
                  "members_sha1": members_digest(members)} for t, task in enumerate(tasks)]
    frame = pl.DataFrame(rows, schema=ACTIVE_SCHEMA)
    if store.exists("active_outcomes"):
        frame = pl.concat([store.read("active_outcomes").select(list(ACTIVE_SCHEMA)), frame])
    return frame.unique(["subset_id", "task"], keep="last", maintain_order=True)


def _rounds_frame(state: LoopState, surrogate_id: str, budget: int, domain_names: list[str],
                  pool: pl.DataFrame, params: LoopParams) -> pl.DataFrame:
    ids = pool["example_id"].to_numpy()
    # as set (missing tasks weigh 1), not normalised: a task the loop never saw then weighs 1 too (target_weights)
    target = {t: float(dict(params.task_weights).get(t, 1.0)) for t in state.data.tasks}
    rows = []
    for cand in state.candidates:
        rows.append({"candidate_id": cand.candidate_id, "surrogate_id": surrogate_id, "kind": cand.kind,
                     "proposer": cand.proposer, "retrainings": cand.retrainings, "round": cand.round,
                     "setting": json.dumps(cand.setting, sort_keys=True),
                     "predicted_gain": cand.predicted_gain, "realised_gain": cand.realised_gain,
                     "realised_per_task": json.dumps(dict(zip(state.data.tasks, cand.realised_per_task.tolist()))),
                     "lcb": cand.lcb, "realised_lcb": cand.realised_lcb, "chosen": cand.chosen,
                     "pick_after_rounds": cand.best_by_round, "budget": budget,
                     "weights": json.dumps(dict(zip(domain_names, np.round(cand.weights, 12).tolist()))),
                     "members": ids[cand.subsets[0]].tolist() if cand.kind == "selection" else [],
                     "gains": cand.gains.tolist() if cand.gains is not None else [],
                     # the target the gains are weighted by, which the verdicts judge every method by
                     "task_weights": json.dumps(target),
                     # the target run whose repetition caps every mixer obeys (target_caps)
                     "training_bytes": params.training_bytes, "max_epochs": params.max_epochs})
    return pl.DataFrame(rows, schema_overrides={"members": pl.List(pl.Int64), "gains": pl.List(pl.Float64),
                                                "budget": pl.Int64, "round": pl.Int64, "retrainings": pl.Int64,
                                                "pick_after_rounds": pl.List(pl.Int64), "training_bytes": pl.Int64,
                                                "max_epochs": pl.Float64})


def _loop_metrics(state: LoopState, reused: int, refused: int) -> dict:
    metrics = {"active_reused": reused, "active_refused": refused, "candidates": len(state.candidates),
               "active_subsets": int((state.data.samplers == "active").sum())}
    for entry in state.calibration:
        metrics[f"calibration_slope.round{entry['round']}"] = entry["slope"]
    for cand in state.candidates:
        if cand.chosen:
            name = cand.kind if cand.proposer == "grasp" else f"{cand.proposer}.{cand.kind}"
            metrics.update({f"chosen.{name}": cand.candidate_id, f"chosen.{name}.lcb": cand.lcb,
                            f"chosen.{name}.realised_gain": cand.realised_gain})
    for proposer in sorted({c.proposer for c in state.candidates}):
        metrics[f"retrainings.{proposer}"] = sum(c.retrainings for c in state.candidates if c.proposer == proposer)
    for round_ in sorted({c.round for c in state.candidates}):
        for kind in ("mixture", "selection"):
            mine = [c.realised_gain for c in state.candidates
                    if c.round == round_ and c.kind == kind and c.proposer == "grasp"]
            if mine:
                metrics[f"round{round_}.{kind}.best_realised_gain"] = max(mine)
    return metrics

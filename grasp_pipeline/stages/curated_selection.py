"""Curation stage: a budget of pool examples per selection method."""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import SelectionParams
from ..config.validation import SettingError
from ..infra.storage import DeltaStore
from ..selection import (
    Selection,
    label_balanced_cells,
    label_quota,
    protected_grasp_selection,
    random_selection,
    scaled_task_weights,
    task_weight_vector,
    top_k,
)
from ..surrogates.baselines import GradDot
from ..training.controls import counts_of, random_at_counts
from .base import StageResult, stage
from .figures import shares_figure
from .tables import method_params, natural_weights, pool_sketches, read_pool, sketch_matrix, target_weights


@stage
def run_curated_selection(store: DeltaStore, params: SelectionParams,
                          task_weights: dict[str, float] | None = None) -> StageResult:
    """Selects a budget of pool examples per method for the loop's target; writes `curated_selections`.

    `task_weights` (`grasp select --task-weight`) re-curates for another target without rerunning the
    loop; the verdicts still judge by the loop's."""
    sketches = pool_sketches(store)
    pool = read_pool(store)
    labelled = params.balance_labels and "label" in pool.columns
    pool = pool.select("example_id", "domain", "content_sha1", *(["label"] if labelled else []))
    sketches = sketches.join(pool, on=["example_id", "domain"], how="left")
    z = sketch_matrix(sketches["sketch"])
    q = sketch_matrix(store.read("task_sketches").sort("task")["sketch"])
    surrogate_id, tasks, grasp_params = method_params(store, "grasp")
    # the loop's target (loop.task_weights, read back from curation_rounds): one target for every stage
    target = target_weights(store, tasks) if task_weights is None else task_weight_vector(tasks, task_weights)
    weights = scaled_task_weights(grasp_params, tasks, target, params.task_scale)
    budget = max(1, int(round(params.budget_fraction * len(z))))
    example_ids = sketches["example_id"].to_numpy()
    excluded = np.flatnonzero(np.isin(example_ids, np.asarray(params.exclude_example_ids, dtype=np.int64)))
    domains = sketches["domain"].to_numpy()
    if labelled and params.max_per_domain:
        raise ValueError("selection.max_per_domain and selection.balance_labels cannot be combined yet; "
                         "set one of them to 0 / false")
    check_budget_fits(params, budget, sketches["content_sha1"].to_numpy(), excluded, domains)
    quota_groups, quota, top_k_constraints = domains, params.max_per_domain, {}  # grasp's per-domain quota
    if labelled:
        quota_groups = sketches["label"].to_numpy()
        quota = label_quota(quota_groups, budget)
        top_k_constraints = {"groups": quota_groups, "max_per_group": quota}
    spread = np.array([p.get("fit_utility_std", 1.0) for p in grasp_params])
    content = sketches["content_sha1"].to_numpy() if params.dedup_content else None
    if content is not None:  # the baselines get the same one-example-per-content rule as grasp
        top_k_constraints["content"] = content
    selections = _loop_pick(store, example_ids, budget)
    cells = label_balanced_cells({}, domains, sketches["label"].to_numpy())[0] if labelled else domains
    selections.update(_at_counts(selections.get("grasp"), cells, content, excluded, params))
    selections["grasp_global"] = protected_grasp_selection(
        z, q, grasp_params, weights, budget, spread=spread, rounds=params.protect_rounds, rate=params.protect_rate,
        margin=params.protect_margin, trust_region=params.trust_region,
        method=params.greedy, domains=quota_groups, max_per_domain=quota, content=content, excluded=excluded)
    selections.update(_baseline_selections(store, z, q, example_ids, weights, budget, excluded, top_k_constraints,
                                           params.random_seeds, domains))
    frame = _selections_frame(selections, surrogate_id, example_ids, domains, budget)
    result = StageResult()
    result.write(store, "curated_selections", frame)
    result.metrics = _curation_metrics(frame, selections["grasp_global"].stats, tasks, weights, budget, len(z),
                                       {"label_quota": quota} if labelled else {})
    composition = (frame.filter(~pl.col("method").is_in(["full", "random_at_counts"]))
                   .group_by("method", "domain").len().sort("method", "domain"))
    result.figures["selection_composition.png"] = shares_figure(
        composition.with_columns(share=pl.col("len") / budget), "method", "share", "share of the selection")
    return result


def _loop_pick(store: DeltaStore, example_ids: np.ndarray, budget: int) -> dict[str, Selection]:
    """The closed loop's selections, or {} without a loop run at this budget (the loop's rows are its
    measured picks, so a re-curation at another budget has only grasp_global until the loop reruns):
    "grasp" (its pick: composition first, validated on dev), "grasp_round0" (what it would have picked
    after its first round), "grasp_proposal" (the candidate the surrogate's predicted lower bound
    prefers, no realised pick: what the surrogate alone chooses) and the equal-budget controls'
    picks "random_pick" and "filter_dedup" (training/controls.py)."""
    if not store.exists("curation_rounds"):
        return {}
    selections = store.read("curation_rounds").filter(pl.col("kind") == "selection")
    if "proposer" not in selections.columns:  # written before the controls: every candidate was GRASP's
        selections = selections.with_columns(proposer=pl.lit("grasp"))
    grasp = selections.filter(pl.col("proposer") == "grasp")
    chosen = grasp.filter(pl.col("chosen"))
    if chosen.height != 1:
        raise ValueError(f"curation_rounds marks {chosen.height} chosen grasp selections, not one; "
                         "rematerialise curation_loop")
    if int(chosen["budget"][0]) != budget:
        return {}
    position = {eid: i for i, eid in enumerate(example_ids.tolist())}
    picks = {"grasp": chosen, "grasp_proposal": grasp.sort("lcb", descending=True, maintain_order=True).head(1)}
    if "pick_after_rounds" in grasp.columns:  # tables written before it was recorded have only the pick
        picks["grasp_round0"] = grasp.filter(pl.col("pick_after_rounds").list.contains(0))
    for control in ("random_pick", "filter_dedup"):
        mine = selections.filter((pl.col("proposer") == control) & pl.col("chosen"))
        if mine.height:
            picks[control] = mine
    out = {}
    for method, row in picks.items():
        rows = np.array([position[e] for e in row["members"][0].to_list()], np.int64)
        gains = np.asarray(row["gains"][0].to_list(), float)  # the greedy's step gains; none for a control's draw
        out[method] = Selection(rows, gains if len(gains) == len(rows) else np.zeros(len(rows)))
    return out


def _at_counts(pick: Selection | None, groups: np.ndarray, content: np.ndarray | None, excluded: np.ndarray,
               params: SelectionParams) -> dict[str, Selection]:
    """`random_at_counts-<j>`: `selection.control_draws` random selections at the grasp pick's counts per
    quota group (domain, or domain×label cell), one example per content when grasp had that rule."""
    if pick is None:
        return {}
    counts = counts_of(groups, pick.rows)
    keep = np.ones(len(groups), bool)
    keep[excluded] = False
    return {f"random_at_counts-{j}": Selection(rows, np.zeros(len(rows)))
            for j in range(params.control_draws)
            for rows in [random_at_counts(groups, counts, params.control_seed + j, content=content, keep=keep)]}


def check_budget_fits(params: SelectionParams, budget: int, content: np.ndarray, excluded: np.ndarray,
                      domains: np.ndarray | None = None) -> None:
    """Raises SettingError when fewer pool examples can be selected than the budget asks for
    (exclusions and content dedup shrink the pool, `max_per_domain` caps each domain), instead of
    writing a short selection."""
    eligible = np.ones(len(content), dtype=bool)
    eligible[excluded] = False
    selectable = len(np.unique(content[eligible])) if params.dedup_content else int(eligible.sum())
    if params.max_per_domain and domains is not None:
        # per domain: what dedup and exclusions leave, capped by the quota (an upper bound when one
        # content sits in two domains; `_check_full` catches the rest after selecting)
        per_domain = [len(np.unique(content[eligible & (domains == d)])) if params.dedup_content
                      else int((eligible & (domains == d)).sum()) for d in np.unique(domains)]
        capped = int(sum(min(n, params.max_per_domain) for n in per_domain))
        if budget > capped:
            largest = int(np.ceil(budget / len(per_domain)))
            raise SettingError(
                f"selection.max_per_domain = {params.max_per_domain}: {len(per_domain)} domains × at most "
                f"{params.max_per_domain} hold {capped} examples, fewer than the budget of {budget} "
                f"(selection.budget_fraction = {params.budget_fraction!r}); raise max_per_domain to at least "
                f"{largest}, set it to 0 (no quota), or lower the budget")
    if budget > selectable:
        duplicates = int(eligible.sum()) - selectable
        raise SettingError(
            f"selection.budget_fraction = {params.budget_fraction!r}: asks for {budget} of {len(content)} pool "
            f"examples, but only {selectable} can be selected ({len(excluded)} excluded, {duplicates} duplicate "
            f"contents); valid values are in (0, {selectable / len(content):.4g}]")


def _baseline_selections(store: DeltaStore, z: np.ndarray, q: np.ndarray, example_ids: np.ndarray,
                         weights: np.ndarray, budget: int, excluded: np.ndarray, top_k_constraints: dict,
                         random_seeds, domains: np.ndarray) -> dict[str, Selection]:
    """grad_dot and datamodel top-k under the same task weights, label quota and content dedup as grasp
    (`top_k_constraints`), and the seeded random selections (at the natural mixture's counts)."""
    natural = natural_weights(store)
    _, _, gd_params = method_params(store, "grad_dot")
    gd_scores = GradDot.weighted_example_scores(z, q, gd_params, weights)
    selections = {"grad_dot": top_k(gd_scores, budget, excluded, **top_k_constraints)}
    _, _, dm_params = method_params(store, "datamodel")
    dm_weights = {eid: 0.0 for eid in example_ids}
    for w, p in zip(weights, dm_params):
        for eid, value in zip(p["example_ids"], p["weights"]):
            dm_weights[eid] = dm_weights.get(eid, 0.0) + w * value
    selections["datamodel"] = top_k(np.array([dm_weights[e] for e in example_ids]), budget, excluded,
                                    **top_k_constraints)
    for seed in random_seeds:
        selections[f"random-{seed}"] = random_selection(len(z), budget, seed, excluded, domains=domains,
                                                        natural=natural)
    return selections


def _selections_frame(selections: dict[str, Selection], surrogate_id: str, example_ids: np.ndarray,
                      domains: np.ndarray, budget: int) -> pl.DataFrame:
    """The curated_selections rows: every method's selection in pick order, then `full` (the whole pool)."""
    short = {method: len(selection.rows) for method, selection in selections.items()
             if len(selection.rows) != budget}
    if short:  # never a short selection: a constraint the budget check could not foresee left rows out
        raise SettingError(f"selections of {short} examples instead of the budget of {budget} (constraints: "
                           "selection.max_per_domain, selection.dedup_content, selection.exclude_example_ids); "
                           "lower selection.budget_fraction or loosen them")
    frames = []
    for key, selection in selections.items():
        frames.append(pl.DataFrame({
            "selection_id": f"{surrogate_id}-{key}", "method": selection_method(key),
            "example_id": example_ids[selection.rows], "rank": np.arange(1, len(selection.rows) + 1),
            "gain": selection.gains.astype(np.float64), "domain": domains[selection.rows],
            "budget": budget}).with_columns(pl.col("rank").cast(pl.Int64), pl.col("budget").cast(pl.Int64)))
    full = pl.DataFrame({"selection_id": f"{surrogate_id}-full", "method": "full", "example_id": example_ids,
                         "rank": np.arange(1, len(example_ids) + 1), "gain": 0.0, "domain": domains,
                         "budget": len(example_ids)}).with_columns(pl.col("rank").cast(pl.Int64),
                                                                   pl.col("budget").cast(pl.Int64))
    return pl.concat(frames + [full])


def selection_method(key: str) -> str:
    """The method of a selection key: `random_at_counts-<j>` are draws of one method, `random_at_counts`
    (the test averages them); `random-<seed>` stay one method each, as they always were."""
    return "random_at_counts" if key.startswith("random_at_counts-") else key


def _curation_metrics(frame: pl.DataFrame, protection: dict, tasks: list[str], weights: np.ndarray, budget: int,
                      pool: int, extra: dict) -> dict:
    composition = (frame.filter(~pl.col("method").is_in(["full", "random_at_counts"]))
                   .group_by("method", "domain").len().sort("method", "domain"))
    return {"budget": budget, "pool": pool, **extra,
            **{f"task_weight.{t}": float(w) for t, w in zip(tasks, weights)},
            "protect_rounds": protection["protect_rounds"],
            **{f"protected_weight.{t}": w for t, w in zip(tasks, protection["protected_weights"])},
            **{f"predicted_gain_vs_random.{t}": g for t, g in zip(tasks, protection["predicted_gain_vs_random"])},
            **{f"domain_share.{m}.{d}": n / budget for m, d, n in composition.iter_rows()}}

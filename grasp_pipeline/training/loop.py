"""The closed loop: propose selections and mixtures, retrain them on `dev`, add them to the fit
set, refit, and pick by a lower confidence bound across bootstrap refits (DESIGN §2).

Each round refits the GRASP surrogate (its LCB-chosen configuration, fixed) on the plan's fit
subsets plus every `active` subset retrained so far, proposes candidates — mixtures along the
path from the natural mix to the refit's optimum, and composition-first selections at that
mixture's counts under several within-domain trust radii — retrains them with the loop's own
data-order seeds on dev, and records predicted and realised gain over random selections of
the budget (retrained with the same seeds). The realised/predicted slope moves the trust:
a surrogate that over-predicts gets a stronger trust region and a shorter mixture step. The
final pick among every candidate evaluated is the one whose predicted gain has the best lower
confidence bound, mean − z·sd over bootstrap refits (resampled fit subsets), under the refit
that has seen all of them. Only `dev` examples are ever scored here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..mixture import MixtureObjective, natural_mixture, optimise_mixture, sample_mixture
from ..selection import composition_first_selection, label_balanced_cells, mixture_counts
from ..surrogates import Grasp, SubsetData, grasp_subset_utility
from .controls import random_at_counts, random_mixtures


@dataclass
class Candidate:
    """One proposal: a mixture (several sampled subsets) or a selection (one subset)."""

    candidate_id: str
    kind: str  # "mixture" or "selection"
    round: int
    setting: dict  # e.g. {"step": 0.5} or {"trust_region": 0.01, "counts_from": "..."}
    weights: np.ndarray | None  # mixtures: π over the domains
    subsets: list[np.ndarray]  # pool rows of each trained subset (one for a selection)
    predicted_gain: float = float("nan")
    realised_gain: float = float("nan")
    realised_per_task: np.ndarray | None = None
    lcb: float = float("nan")  # of the predicted gain, over bootstrap refits
    realised_lcb: float = float("nan")  # of the realised gain, over resampled seeds/samples and references
    best_by_round: list = field(default_factory=list)  # rounds r where stopping after r would pick this one
    units: np.ndarray | None = None  # (U, T) dev utility of each seed (selections) or sample (mixtures)
    chosen: bool = False
    gains: np.ndarray | None = None  # the greedy's step gains (selections)
    # who proposed it: "grasp", or an equal-budget control ("random_pick", "filter_dedup": training/controls.py);
    # only GRASP's candidates join the fit set and move the trust; each proposer gets its own pick
    proposer: str = "grasp"
    retrainings: int = 0  # dev retrainings spent on it (its seeds × subsets)


@dataclass
class LoopState:
    """The fit set as it grows: the plan's SubsetData plus active subsets, and the trust settings."""

    data: SubsetData
    config: dict  # the chosen GRASP configuration (surrogates.config)
    trust: list[float]
    steps: list[float]
    candidates: list[Candidate] = field(default_factory=list)
    calibration: list[dict] = field(default_factory=list)
    selection_blocks: list[int] = field(default_factory=list)  # sketch blocks the selection candidates use
    excluded: np.ndarray | None = None  # pool rows GRASP's selections may not pick (loop.grasp_filter_share)
    weights: np.ndarray | None = None  # the target (loop.task_weights, normalised); None = every task alike
    search: str = "screen"  # loop.selection_search: screen | greedy (the same default)
    screen_draws: int = 2000  # loop.screen_draws

    def __post_init__(self):
        if self.weights is None and self.data is not None:
            self.weights = np.full(len(self.data.tasks), 1 / len(self.data.tasks))

    def best_mixture(self, proposer: str = "grasp") -> Candidate | None:
        """The proposer's evaluated mixture with the best realised gain so far (None before any)."""
        mixtures = [c for c in self.candidates if c.kind == "mixture" and c.proposer == proposer]
        return max(mixtures, key=lambda c: c.realised_gain) if mixtures else None


def grasp_from_config(config: dict) -> Grasp:
    return Grasp(**{k: v for k, v in config.items() if k != "method"})


def refit(data: SubsetData, config: dict, rows: np.ndarray) -> list[dict]:
    """The GRASP parameters of every task fitted on `rows` with the fixed configuration."""
    surrogate = grasp_from_config(config)
    return [surrogate.fit(data, rows, t) for t in range(len(data.tasks))]


def bootstrap_refits(data: SubsetData, config: dict, draws: int, seed: int) -> list[list[dict]]:
    """Refits on `draws` resamples (with replacement) of the fit rows."""
    rng = np.random.default_rng(seed)
    fit = data.fit_rows
    return [refit(data, config, rng.choice(fit, size=len(fit), replace=True)) for _ in range(draws)]


def with_active(data: SubsetData, subsets: list[np.ndarray], utility: np.ndarray, ids: np.ndarray) -> SubsetData:
    """`data` with more `fit` subsets of sampler `active` (pool rows, (s, T) utility, subset ids)."""
    if not subsets:
        return data
    n = data.pool_sketch.shape[0]
    rows = np.concatenate([np.full(len(s), i) for i, s in enumerate(subsets)])
    cols = np.concatenate(subsets)
    extra = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(subsets), n))
    return SubsetData(
        subset_ids=np.concatenate([data.subset_ids, ids]), roles=np.concatenate([data.roles, ["fit"] * len(ids)]),
        samplers=np.concatenate([data.samplers, ["active"] * len(ids)]),
        sizes=np.concatenate([data.sizes, [len(s) for s in subsets]]),
        membership=sp.vstack([data.membership, extra]).tocsr(), utility=np.vstack([data.utility, utility]),
        pool_sketch=data.pool_sketch, task_sketch=data.task_sketch, tasks=data.tasks,
        sketch_blocks=data.sketch_blocks)


def predicted_mean_utility(params: list[dict], data: SubsetData, subsets: list[np.ndarray],
                           weights: np.ndarray | None = None) -> np.ndarray:
    """(s,) GRASP-predicted utility of subsets given by pool rows, averaged over tasks with `weights`
    (normalised; None = every task alike)."""
    z = data.pool_sketch.astype(np.float64)
    sums = np.stack([z[rows].sum(0) for rows in subsets])
    sizes = np.array([len(rows) for rows in subsets])
    per_task = np.stack([grasp_subset_utility(p, sums, sizes, q) for p, q in zip(params, data.task_sketch)])
    return np.average(per_task, axis=0, weights=weights)


def propose(state: LoopState, params: list[dict], stats, domains: np.ndarray, budget: int, caps: np.ndarray,
            round_: int, samples: int, seed: int, content: np.ndarray | None,
            labels: np.ndarray | None = None) -> list[Candidate]:
    """This round's mixtures (natural → optimum at each step) and selections (composition first, at the
    counts of the best mixture measured so far) under the current trust radii; with `labels` (a
    classification pool) the selections balance them too (`label_balanced_cells`)."""
    weights = state.weights  # the target: the loop's objective, its gains and the verdicts weigh tasks alike
    objective = MixtureObjective(stats, state.data.task_sketch, params, weights, budget)
    natural, optimum = natural_mixture(stats), optimise_mixture(objective, caps)
    out = []
    for step in state.steps:
        pi = (1 - step) * natural + step * optimum
        draws = [sample_mixture(domains, pi, stats.domains, budget, seed + 1000 * round_ + j) for j in range(samples)]
        out.append(Candidate(f"r{round_}-mixture-{step:g}", "mixture", round_, {"step": step}, pi, draws))
    groups, counts, counts_from, pi = selection_counts(state, "grasp", stats, domains, budget, labels)
    if state.search == "screen":
        return out + screened_candidates(state, params, groups, counts, counts_from, pi, round_, seed, content)
    z = state.data.pool_sketch
    for block in state.selection_blocks:
        # the block the LCB chose predicts composition best; a later checkpoint's gradients see
        # structure (real text vs shuffled characters) that early ones, still learning byte
        # frequencies, do not — which one selects better inside a domain is what the loop measures
        block_params = params_of_block(state, params, block)
        for radius in state.trust:
            chosen = composition_first_selection(z, state.data.task_sketch, block_params, weights, groups, counts,
                                                 trust_region=radius, content=content, excluded=state.excluded)
            out.append(Candidate(f"r{round_}-selection-b{block}-{radius:g}", "selection", round_,
                                 {"trust_region": radius, "counts_from": counts_from, "sketch_block": block},
                                 pi, [chosen.rows], gains=chosen.gains))
    return out


def params_of_block(state: LoopState, params: list[dict], block: int) -> list[dict]:
    """The refit's params when `block` is the one its configuration uses, else a refit on that block."""
    if block == state.config.get("sketch_block"):
        return params
    return refit(state.data, {**state.config, "sketch_block": block}, state.data.fit_rows)


def screened_candidates(state: LoopState, params: list[dict], groups: np.ndarray, counts: dict, counts_from: str,
                        pi: np.ndarray, round_: int, seed: int, content: np.ndarray | None) -> list[Candidate]:
    """loop.selection_search = screen: the surrogate (refit on each selection block) ranks one round's
    `screen_draws` random draws at the counts and each block's best predicted draws not already taken
    become candidates, as many as the greedy makes. Why: on the demo the surrogate ranks random
    candidates (dev calibration slope ≈ 0.7 on random_pick's) but not the optimiser's (≈ 0), so the
    search stays where the fit subsets are; what it adds over random_at_counts is the ranking alone."""
    keep = None
    if state.excluded is not None and len(state.excluded):
        keep = np.ones(len(groups), bool)
        keep[state.excluded] = False
    draws = [random_at_counts(groups, counts, seed + 50_000 + 10_000 * round_ + i, content=content, keep=keep)
             for i in range(state.screen_draws)]
    out, taken = [], set()
    for block in state.selection_blocks:
        block_params = params_of_block(state, params, block)
        predicted = predicted_mean_utility(block_params, state.data, draws, state.weights)
        order = [i for i in np.argsort(-predicted, kind="stable") if i not in taken][:len(state.trust)]
        taken.update(order)
        out += [Candidate(f"r{round_}-selection-b{block}-screen{rank}", "selection", round_,
                          {"screen_rank": rank, "screen_draws": len(draws), "counts_from": counts_from,
                           "sketch_block": block}, pi, [draws[i]]) for rank, i in enumerate(order)]
    return out


def selection_counts(state: LoopState, proposer: str, stats, domains: np.ndarray, budget: int,
                     labels: np.ndarray | None) -> tuple[np.ndarray, dict, str, np.ndarray]:
    """(group of every row, {group: count}, where the counts come from, π) of a round's selections.

    They take their counts from the proposer's best mixture measured so far (the natural mix in
    round 0): the realised outcome, not the surrogate, decides the composition they build on. With
    `labels` the groups are (domain, label) cells, balanced as every score-based selection is."""
    best = state.best_mixture(proposer)
    counts_from, pi = (best.candidate_id, best.weights) if best is not None else ("natural", natural_mixture(stats))
    available = {d: int(c) for d, c in zip(stats.domains, stats.counts)}
    counts = mixture_counts(pi, stats.domains, budget, available)
    groups = domains
    if labels is not None:
        groups, counts = label_balanced_cells(counts, domains, labels)
    return groups, counts, counts_from, pi


def propose_random(state: LoopState, stats, domains: np.ndarray, budget: int, caps: np.ndarray, round_: int,
                   samples: int, seed: int, content: np.ndarray | None, labels: np.ndarray | None,
                   concentration: float) -> list[Candidate]:
    """The `random_pick` control's proposals of a round: as many mixtures and selections as `propose`
    makes, random in place of the surrogate's (training/controls.py); the mixture samples share
    GRASP's sample seeds, so the two procedures differ only in what they propose."""
    natural = natural_mixture(stats)
    out = []
    for i, pi in enumerate(random_mixtures(natural, caps, len(state.steps), concentration, seed + 7000 + round_)):
        draws = [sample_mixture(domains, pi, stats.domains, budget, seed + 1000 * round_ + j) for j in range(samples)]
        out.append(Candidate(f"r{round_}-random-mixture-{i}", "mixture", round_, {"draw": i}, pi, draws,
                             proposer="random_pick"))
    groups, counts, counts_from, pi = selection_counts(state, "random_pick", stats, domains, budget, labels)
    for i in range(len(state.selection_blocks) * len(state.trust)):
        rows = random_at_counts(groups, counts, seed + 8000 + 100 * round_ + i, content=content)
        out.append(Candidate(f"r{round_}-random-selection-{i}", "selection", round_,
                             {"draw": i, "counts_from": counts_from}, pi, [rows], proposer="random_pick"))
    return out


def calibration_slope(predicted: np.ndarray, realised: np.ndarray) -> float:
    """Least-squares slope of realised on predicted gain (NaN with < 2 distinct predictions)."""
    predicted, realised = np.asarray(predicted, float), np.asarray(realised, float)
    if len(predicted) < 2 or np.ptp(predicted) == 0:
        return float("nan")
    return float(np.polyfit(predicted, realised, 1)[0])


def adapt(state: LoopState, slope: float) -> None:
    """Over-prediction (slope < 0.5) tightens the trust region ×10 and halves the mixture steps;
    good calibration (slope > 0.8) loosens the trust ÷3 and lengthens the steps ×1.5 (≤ 1)."""
    if not np.isfinite(slope):
        return
    if slope < 0.5:
        state.trust = [r * 10 for r in state.trust]
        state.steps = [s / 2 for s in state.steps]
    elif slope > 0.8:
        state.trust = [r / 3 for r in state.trust]
        state.steps = [min(1.0, s * 1.5) for s in state.steps]


def realised_lower_bound(units: np.ndarray, references: np.ndarray, z: float, draws: int, seed: int,
                         weights: np.ndarray | None = None) -> float:
    """mean − z·sd of the realised gain (over tasks, weighted by the target `weights`) over a two-way
    bootstrap: the candidate's units (U, T: seeds or samples) and the random references (R, S, T) are
    resampled together."""
    rng = np.random.default_rng(seed)
    gains = [np.average(units[rng.integers(0, len(units), len(units))].mean(0)
                        - references[rng.integers(0, len(references), len(references))].mean((0, 1)), weights=weights)
             for _ in range(draws)]
    return float(np.mean(gains) - z * np.std(gains, ddof=1))


def lower_bounds(candidates: list[Candidate], refits: list[list[dict]], data: SubsetData, stats, budget: int,
                 references: list[np.ndarray], z: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(c,) mean − z·sd over bootstrap refits of each candidate's predicted gain over the references
    (tasks weighted by the target `weights`; None = alike)."""
    weights = np.full(len(data.tasks), 1 / len(data.tasks)) if weights is None else weights
    gains = np.zeros((len(refits), len(candidates)))
    for b, params in enumerate(refits):
        base = predicted_mean_utility(params, data, references, weights).mean()
        objective = MixtureObjective(stats, data.task_sketch, params, weights, budget)
        for c, cand in enumerate(candidates):
            value = objective(cand.weights) if cand.kind == "mixture" else \
                predicted_mean_utility(params, data, cand.subsets, weights)[0]
            gains[b, c] = value - base
    return gains.mean(0) - z * gains.std(0, ddof=1)

"""Subset plan: which subsets of the pool get retrained, by which sampler, in which role.

Three declared samplers:
- `uniform`: every subset is a uniformly random α-fraction of the pool (the classic LDS
  regime; size is constant, so only composition can explain the outcome);
- `dirichlet`: size fraction ~ U[f_min, f_max], domain proportions ~ Dirichlet(β), members
  drawn without replacement inside each domain (the regime where size, mixture and
  interactions all matter);
- `stratified`: exactly the natural per-domain counts of an α-fraction (largest-remainder
  rounding), members drawn without replacement inside each domain: size and composition
  are fixed, only the examples differ, so its fidelity and noise ceiling show whether
  within-domain choice is visible under the recipe at all.
Each subset is `fit` (used to fit and choose surrogates) or `holdout` (only to report).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..config.params import PlanParams


def _uniform_members(rng: np.random.Generator, example_ids: np.ndarray, fraction: float) -> np.ndarray:
    size = max(1, int(round(fraction * len(example_ids))))
    return rng.choice(example_ids, size=size, replace=False)


def _dirichlet_members(rng: np.random.Generator, by_domain: dict[str, np.ndarray],
                       params: PlanParams) -> np.ndarray:
    n_pool = sum(len(ids) for ids in by_domain.values())
    size = max(1, int(round(rng.uniform(params.dirichlet_min_fraction, params.dirichlet_max_fraction) * n_pool)))
    proportions = rng.dirichlet(np.full(len(by_domain), params.dirichlet_beta))
    counts = np.minimum(rng.multinomial(size, proportions), [len(ids) for ids in by_domain.values()])
    parts = [rng.choice(ids, size=count, replace=False)
             for ids, count in zip(by_domain.values(), counts) if count > 0]
    return np.concatenate(parts) if parts else rng.choice(np.concatenate(list(by_domain.values())), 1)


def natural_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """Per-domain counts proportional to `sizes` summing to `total` (largest remainder, ties to the first)."""
    raw = np.asarray(sizes, float) * total / max(1, int(np.sum(sizes)))
    counts = np.floor(raw).astype(np.int64)
    counts[np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


def _stratified_members(rng: np.random.Generator, by_domain: dict[str, np.ndarray], fraction: float) -> np.ndarray:
    sizes = np.array([len(ids) for ids in by_domain.values()])
    counts = natural_counts(sizes, max(1, int(round(fraction * sizes.sum()))))
    return np.concatenate([rng.choice(ids, size=count, replace=False)
                           for ids, count in zip(by_domain.values(), counts) if count > 0])


def sample_subset_plan(pool: pl.DataFrame, params: PlanParams) -> pl.DataFrame:
    """Returns the subset_plan table for a pool with columns example_id and domain.

    Subset ids are consecutive from 0 in a fixed order (uniform fit, uniform holdout,
    dirichlet fit, dirichlet holdout, stratified fit, stratified holdout); each subset has its
    own seed, so any subset can be regenerated alone, and members are sorted example ids.
    The stratified subsets have the uniform sampler's size (`uniform_fraction`).
    """
    pool = pool.sort("example_id")
    example_ids = pool["example_id"].to_numpy()
    by_domain = {domain: pool.filter(pl.col("domain") == domain)["example_id"].to_numpy()
                 for domain in sorted(pool["domain"].unique().to_list())}
    blocks = [("uniform", "fit", params.uniform_fit), ("uniform", "holdout", params.uniform_holdout),
              ("dirichlet", "fit", params.dirichlet_fit), ("dirichlet", "holdout", params.dirichlet_holdout),
              ("stratified", "fit", params.stratified_fit), ("stratified", "holdout", params.stratified_holdout)]
    rows = []
    for sampler, role, count in blocks:
        for _ in range(count):
            subset_id = len(rows)
            seed = params.seed * 1_000_003 + subset_id
            rng = np.random.default_rng(seed)
            if sampler == "uniform":
                members = _uniform_members(rng, example_ids, params.uniform_fraction)
            elif sampler == "stratified":
                members = _stratified_members(rng, by_domain, params.uniform_fraction)
            else:
                members = _dirichlet_members(rng, by_domain, params)
            members = np.sort(members).astype(np.int64)
            rows.append({"subset_id": subset_id, "role": role, "sampler": sampler,
                         "size": len(members), "seed": seed, "members": members.tolist(),
                         "batch": batch_key(subset_id, params.subsets_per_batch)})
    return pl.DataFrame(rows, schema={"subset_id": pl.Int64, "role": pl.Utf8, "sampler": pl.Utf8,
                                      "size": pl.Int64, "seed": pl.Int64, "members": pl.List(pl.Int64),
                                      "batch": pl.Utf8})


def batch_key(subset_id: int, subsets_per_batch: int) -> str:
    """Returns the retraining batch (a partition key: no spaces) a subset belongs to."""
    return f"b{subset_id // subsets_per_batch:04d}"

"""The verdict table: each method's gain over its reference and the headline differences, with the
right null (evaluation/null.py). One function for both splits: `curation_test` writes it for `test`
(fresh seeds), `selection_validation` for `dev` (the recipe's seeds), so the method can be developed
against the same controls and statistics without touching `test`.

Rows of kind `gain`: a selection method over the mean of the random references (a method of K
selections, such as `random_at_counts`, as the mean of K draws), a mixture over `natural` (paired
samples). Rows of kind `difference`: method − reference for the pairs in `SELECTION_DIFFERENCES` and
`MIXTURE_DIFFERENCES` whose two sides were both measured. `candidates` is how many candidates a pick
chose among; `dev_retrainings` what its procedure spent on dev (equal for grasp and random_pick).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .null import Comparison, difference, gain_over_random, paired_difference

# what GRASP must beat to be worth running: the equal-budget controls first (training/controls.py)
SELECTION_DIFFERENCES = (("grasp", "random_pick"), ("grasp", "random_at_counts"), ("grasp", "filter_dedup"),
                         ("grasp", "datamodel"), ("grasp_proposal", "random_at_counts"))
MIXTURE_DIFFERENCES = (("grasp", "regmix"), ("grasp", "natural"), ("grasp", "random_pick"))
# random selections at a multiple of the budget (curation_test's test.data_multiplier): `grasp` − them ≥ 0
# is the data multiplier reached
MULTIPLIED_PREFIX = "random_x"

VERDICT_SCHEMA = {"split": pl.Utf8, "kind": pl.Utf8, "method": pl.Utf8, "reference": pl.Utf8, "gain": pl.Float64,
                  "ci_low": pl.Float64, "ci_high": pl.Float64, "p_value": pl.Float64,
                  "null_percentile": pl.Float64, "excludes_zero": pl.Boolean, "draws": pl.Int64,
                  "candidates": pl.Int64, "dev_retrainings": pl.Int64, "seeds": pl.Int64, "tasks": pl.Int64,
                  "level": pl.Float64}


def verdict_frame(split: str, selections: dict[str, np.ndarray], randoms: np.ndarray,
                  mixtures: dict[str, np.ndarray], *, budgets: dict[str, tuple[int | None, int | None]],
                  level: float, weights: np.ndarray | None = None) -> pl.DataFrame:
    """The verdict rows of one split.

    selections: {method: (K, S, T) utilities}, seed pairs shared with randoms (R, S, T);
    mixtures: {method: (J, T) utilities}, sample j paired across mixtures, `natural` among them (or {});
    budgets: {method: (candidates, dev retrainings)} of the methods that picked among candidates;
    weights: the target (T,) (`stages.tables.target_weights`; None = every task alike): every gain is the
    target-weighted mean over tasks, with its task-resampling variance (evaluation/null.py)."""
    boot = {"level": level, "weights": weights}
    seeds, tasks = randoms.shape[1], randoms.shape[2]
    rows = []

    def add(kind, method, reference, found: Comparison, mixture: bool):
        candidates, retrainings = budgets.get(f"mixture-{method}" if mixture else method, (None, None))
        name = f"mixture-{method}" if mixture else method
        rows.append({"split": split, "kind": kind, "method": name, "reference": reference, "gain": found.gain,
                     "ci_low": found.ci[0], "ci_high": found.ci[1], "p_value": found.p_value,
                     "null_percentile": found.null_percentile, "excludes_zero": found.excludes_zero,
                     "draws": found.draws[0], "candidates": candidates, "dev_retrainings": retrainings,
                     "seeds": seeds, "tasks": tasks, "level": level})

    for method, values in selections.items():
        add("gain", method, "random", gain_over_random(values, randoms, **boot), False)
    more = [m for m in selections if m.startswith(MULTIPLIED_PREFIX)]
    for a, b in SELECTION_DIFFERENCES + tuple(("grasp", m) for m in more):
        if a in selections and b in selections:
            add("difference", a, b, difference(selections[a], selections[b], randoms, **boot), False)
    if "natural" in mixtures:
        for method, values in mixtures.items():
            if method != "natural":
                add("gain", method, "mixture-natural", paired_difference(values, mixtures["natural"], **boot), True)
        for a, b in MIXTURE_DIFFERENCES:
            if a in mixtures and b in mixtures and b != "natural":
                add("difference", a, f"mixture-{b}", paired_difference(mixtures[a], mixtures[b], **boot), True)
    return pl.DataFrame(rows, schema=VERDICT_SCHEMA)


def loop_budgets(rounds: pl.DataFrame | None) -> dict[str, tuple[int | None, int | None]]:
    """{method: (candidates its pick chose among, dev retrainings of its procedure)} from curation_rounds:
    selections under their method names, mixtures as `mixture-<method>`."""
    if rounds is None or rounds.is_empty():
        return {}
    if "proposer" not in rounds.columns:  # written before the controls: every candidate was GRASP's
        rounds = rounds.with_columns(proposer=pl.lit("grasp"), retrainings=pl.lit(None, pl.Int64))
    out = {}
    for proposer in rounds["proposer"].unique().sort().to_list():
        mine = rounds.filter(pl.col("proposer") == proposer)
        spent = int(mine["retrainings"].sum()) if mine["retrainings"].null_count() == 0 else None
        for kind, prefix in (("selection", ""), ("mixture", "mixture-")):
            count = mine.filter(pl.col("kind") == kind).height
            if count:
                out[f"{prefix}{proposer}"] = (count, spent)
        if proposer == "grasp":
            out["grasp_proposal"] = (mine.filter(pl.col("kind") == "selection").height, spent)
            out["grasp_round0"] = (mine.filter((pl.col("kind") == "selection") & (pl.col("round") == 0)).height,
                                   None)
    return out


def utilities_by_method(keys: list[tuple[str, str]], utility) -> dict[str, np.ndarray]:
    """{method: (K, S, T)} from [(key, method)] in order and `utility(key)` → (S, T)."""
    out: dict[str, list] = {}
    for key, method in keys:
        out.setdefault(method, []).append(utility(key))
    return {method: np.stack(values) for method, values in out.items()}

"""Asset checks over real Delta tables: what each check reports and when it fails."""

from __future__ import annotations

import math

import polars as pl
import pytest

from grasp_pipeline.evaluation.checks import holdout_fidelity_above
from grasp_pipeline.infra.storage import DeltaStore


def write_surrogates(store: DeltaStore, method: str, holdout_spearman: list[float]) -> None:
    n = len(holdout_spearman)
    store.write("surrogates", pl.DataFrame({
        "surrogate_id": ["s1"] * n, "method": [method] * n, "task": [f"task{i}" for i in range(n)],
        "params": ["{}"] * n, "config": ["{}"] * n, "cv_mean": [0.5] * n, "cv_lcb": [0.4] * n,
        "holdout_spearman": holdout_spearman, "holdout_pearson": holdout_spearman, "mlflow_run_id": ["r"] * n}))


def test_holdout_fidelity_of_exactly_zero_is_reported_as_zero_not_nan(tmp_path):
    store = DeltaStore(str(tmp_path))
    write_surrogates(store, "grasp", [0.25, -0.25, 0.0])
    passed, facts = holdout_fidelity_above(store, floor=-0.1)
    assert facts["mean_holdout_spearman"] == 0.0
    assert passed
    assert holdout_fidelity_above(store, floor=0.1)[0] is False


def test_holdout_fidelity_skips_nan_tasks_and_is_nan_only_without_any_value(tmp_path):
    store = DeltaStore(str(tmp_path))
    write_surrogates(store, "grasp", [0.5, float("nan"), 0.3])
    assert holdout_fidelity_above(store, floor=0.0)[1]["mean_holdout_spearman"] == pytest.approx(0.4)
    write_surrogates(store, "grasp", [float("nan"), float("nan")])
    passed, facts = holdout_fidelity_above(store, floor=0.0)
    assert math.isnan(facts["mean_holdout_spearman"]) and not passed

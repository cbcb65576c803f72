"""Bad results stop at the door (issue 30, items 3, 5, 6): non-finite task sketches and surrogate fits are
refused before their commit; readers combining sketches and a surrogate refuse two reference models; a
damaged Delta log stops `grasp run` before its first write and never crashes the failure summary; a failed
stage is not shown with ✓. Real roots, real stages, a real `grasp` process."""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.infra import progress
from grasp_pipeline.infra.checkpoint_files import checkpoint_location
from grasp_pipeline.infra.storage import DeltaStore, PinnedReads
from grasp_pipeline.ops.export import export_for_trainers
from grasp_pipeline.stages.reference_model import write_files
from grasp_pipeline.stages.tables import load_reference_checkpoints, load_reference_model, reference_row

from .conftest import TINY, build_tables_until, copy_root, tiny_params


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    """Every table up to mixture_weights (surrogates, selections, mixtures) for the tiny config."""
    root = tmp_path_factory.mktemp("fitted") / "root"
    build_tables_until(root, "mixture_weights")
    return root


@pytest.fixture
def store(fitted, tmp_path) -> DeltaStore:
    return copy_root(fitted, tmp_path / "root")


def versions(store: DeltaStore) -> dict[str, int | None]:
    from grasp_pipeline.infra.storage import CONTRACT

    return {table: store.version(table) for table in CONTRACT}


# ----------------------------------------------------------------------------- finite or refuse


def test_task_sketches_that_overflow_are_refused_before_their_commit(store):
    """A diverged reference model (as roots written before the warm-up check hold: issue 30, item 3) gives
    non-finite task gradients: task_sketches names the task and the setting, and writes nothing."""
    workload = tiny_params().workload.build()
    row = reference_row(store, workload)
    _, theta = load_reference_model(store, workload)
    _, checkpoints = load_reference_checkpoints(store, workload)
    scale = float("inf")  # what reference.lr = 1e308 gave: parameters at ±inf (and NaN where they were 0)
    state, files = write_files(checkpoint_location(store), f"{row['model_version']}-blown",
                               {n: p * scale for n, p in theta.items()},
                               {step: {n: p * scale for n, p in params.items()} for step, params in checkpoints},
                               tiny_params().reference)
    frame = store.read("reference_models")
    blown = frame.with_columns(pl.Series("state", [state], dtype=frame.schema["state"]),
                               pl.Series("checkpoints", [files], dtype=frame.schema["checkpoints"]))
    store.write("reference_models", blown)  # same model_version: gradient_sketches still match it
    before = versions(store)
    with pytest.raises(FloatingPointError, match=r"task_sketches: \d+ of \d+ rows are not finite \(first: task='\w+'"
                                                 r".*lower reference.lr.*nothing was written"):
        stages.run_task_sketches(store, workload)
    assert versions(store) == before


def test_surrogate_fits_that_are_not_finite_are_refused_before_any_surrogate_table(store):
    outcomes = store.read("subset_outcomes")
    # finite utilities whose squares overflow: the fits' spreads and predictions are not finite
    huge = outcomes.with_columns(loss=pl.col("loss") * 1e300 * (1 + pl.col("subset_id") % 7))
    store.write("subset_outcomes", huge.with_columns(utility=-pl.col("loss")))
    before = versions(store)
    with pytest.raises(FloatingPointError, match=r"surrogate(s|_predictions): \d+ of \d+ rows are not finite "
                                                 r".*surrogate.grasp_ridges.*retrain.lr; nothing was written"):
        stages.run_surrogates(store, tiny_params().surrogate)
    assert versions(store) == before


# ----------------------------------------------------------------------------- one reference model


def test_readers_refuse_sketches_of_another_reference_model_than_the_surrogate(store):
    params = tiny_params()
    workload = params.workload.build()
    fitted_on = store.read("surrogates")["model_version"][0]
    # a new reference model and its sketches, but no new surrogate fit (the issue's `grasp select` case)
    stages.run_reference_model(store, workload, replace(params.reference, seed=params.reference.seed + 1))
    stages.run_gradient_sketches(store, workload, params.sketch)
    stages.run_task_sketches(store, workload)
    now = store.read("gradient_sketches")["model_version"][0]
    assert now != fitted_on
    before = versions(store)
    both = rf"gradient_sketches: \['{now}'\].*surrogates: \['{fitted_on}'\]"
    for run in (lambda: stages.run_curated_selection(store, params.selection),
                lambda: stages.run_mixture_weights(store, params.mixture),
                lambda: stages.run_curation_loop(store, workload, params.loop)):
        with pytest.raises(ValueError, match=rf"different reference models \(.*{both}"):
            run()
    assert versions(store) == before


def test_export_refuses_selections_and_mixtures_of_two_fits(store, tmp_path):
    mixtures = store.read("mixture_weights")
    other = "sg-" + "0" * 12
    store.write("mixture_weights", mixtures.with_columns(
        mixture_id=pl.col("mixture_id").str.replace(r"^sg-[0-9a-f]{12}", other)))
    selection_fit = store.read("curated_selections")["selection_id"][0][:15]
    params = replace(tiny_params().export, destination=str(tmp_path / "out"))
    with pytest.raises(ValueError, match=rf"mixture_weights: \['{other}'\]; curated_selections: "
                                         rf"\['{selection_fit}'\]"):
        export_for_trainers(store, params)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- integrity first


def truncate_last_commit(store: DeltaStore, table: str) -> None:
    last = sorted(glob.glob(f"{store.uri(table)}/_delta_log/*.json"))[-1]
    text = Path(last).read_text()
    Path(last).write_text(text[:len(text) // 2])


def test_a_damaged_table_stops_grasp_run_before_its_first_write(store, tmp_path):
    truncate_last_commit(store, "surrogates")
    before = {t: v for t, v in versions_readable(store).items()}
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    grasp = Path(sys.executable).with_name("grasp")
    done = subprocess.run([str(grasp), "run", "--profile", "smoke", "--config", str(config), "--root", store.root],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")})
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("grasp: error")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Delta table 'surrogates'" in errors[0] and "cannot be read" in errors[0]
    assert versions_readable(store) == before  # no table got a new version (was: four recomputed tables)


def versions_readable(store: DeltaStore) -> dict[str, int | None]:
    from grasp_pipeline.infra.lineage import unreadable_tables
    from grasp_pipeline.infra.storage import CONTRACT

    damaged = unreadable_tables(store)
    return {table: store.version(table) for table in CONTRACT if table not in damaged}


def test_the_failure_summary_names_a_damaged_table_and_what_was_committed(store):
    from assets.cli import committed_before_failure
    from grasp_pipeline.infra.commits import recording

    with recording("subset_plan", dagster_run_id="run-1"):  # a commit of a run, with its lineage
        version = PinnedReads(store, asset="subset_plan").write("subset_plan", store.read("subset_plan"))
    truncate_last_commit(store, "surrogates")
    summary = committed_before_failure(store, ["run-1"])
    assert f"subset_plan@{version}" in summary and "Damaged (Delta log unreadable, not checked): surrogates" in summary


# ----------------------------------------------------------------------------- ✓ only for success


def test_a_failed_stage_is_not_ticked():
    from assets.cli.console import ConsoleProgress

    stream = io.StringIO()
    with progress.reporting(ConsoleProgress(stream=stream, bars=False)):
        with progress.task("fine", unit="stage"):
            pass
        with pytest.raises(RuntimeError), progress.task("broken", unit="stage"):
            raise RuntimeError("boom")
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("✓ fine ") for line in lines)
    assert any(line.startswith("✗ broken failed after") for line in lines)
    assert not any(line.startswith("✓ broken") for line in lines), lines

"""`grasp run` end to end as a user runs it: a subprocess, a user corpus, a persistent instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from grasp_pipeline.infra.storage import DeltaStore

from .conftest import TINY, write_user_corpus

STAGES = ["corpus_shards", "reference_model", "subset_plan", "gradient_sketches", "subset_outcomes", "task_sketches",
          "surrogates", "curation_loop", "curated_selection", "mixture_weights", "selection_validation",
          "curation_test", "target_check", "trainer_export"]


@pytest.fixture(scope="module")
def grasp_run(tmp_path_factory):
    """`grasp run` in a subprocess on a user corpus, with its own instance and storage root."""

    tmp_path = tmp_path_factory.mktemp("grasp_run")
    corpus = write_user_corpus(tmp_path / "user" / "corpus.jsonl")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    home = tmp_path / "dagster_home"
    grasp = Path(sys.executable).with_name("grasp")
    completed = subprocess.run(
        [str(grasp), "run", "--profile", "smoke", "--corpus", str(corpus), "--config", str(config),
         "--root", str(tmp_path / "storage")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(home)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return tmp_path, home, completed


def test_grasp_run_on_a_user_corpus_prints_the_summary_and_records_the_run(grasp_run):
    tmp_path, home, completed = grasp_run
    for expected in ("Holdout fidelity", "grasp", "grad_dot", "datamodel", "random-0", "Wall seconds per stage"):
        assert expected in completed.stdout
    assert set(DeltaStore(str(tmp_path / "storage")).read("corpus_shards")["domain"]) == {"news", "code", "poetry"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["grasp_fit_and_curate", "grasp_prepare", "grasp_retrain",
                                                   "grasp_sketch"]
        assert all(r.is_success for r in runs)


def test_grasp_run_shows_every_stage_and_its_loops_on_stderr(grasp_run):
    err = grasp_run[2].stderr
    for stage in STAGES:
        assert f"▶ {stage}" in err and f"✓ {stage} " in err, stage
    for loop in ("warm-up: done", "sketching: done", "retraining fit subsets: done", "grasp candidates: done",
                 "sketching tasks: done", "protection: done", "retraining selections: done", "exporting: done"):
        assert loop in err, loop


def test_grasp_run_nests_every_stage_run_under_one_mlflow_parent_run(grasp_run):
    from mlflow.tracking import MlflowClient

    from grasp_pipeline.infra.tracking import default_tracking_uri

    tmp_path, home, _ = grasp_run
    client = MlflowClient(tracking_uri=default_tracking_uri(str(tmp_path / "storage")))
    experiment = client.get_experiment_by_name("grasp-pipeline").experiment_id
    (parent,) = client.search_runs([experiment], filter_string="tags.`grasp.profile` = 'smoke'")
    assert parent.info.status == "FINISHED" and parent.data.params["retrain.steps"] == "4"  # the whole config
    children = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["dagster.asset"] for r in children) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" and r.data.metrics["stage_seconds"] > 0 for r in children)
    assert set(parent.data.tags["dagster.run_ids"].split(",")) == {r.data.tags["dagster.run_id"] for r in children}
    assert {f"stage_seconds.{s}" for s in STAGES} <= set(parent.data.metrics)


def test_grasp_run_with_an_unknown_config_field_fails_naming_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"retrain": {"stepz": 3}}')
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("grasp")), "run", "--config", str(bad), "--root", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert completed.returncode != 0
    assert "stepz" in completed.stderr


def test_grasp_select_and_mixture_recurate_from_existing_tables(pipeline_run, tmp_path, monkeypatch):
    import polars as pl

    from assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    # the peer mixers of `grasp mixture` fit on the plan's fit subsets and their outcomes too
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "surrogates", "subset_plan",
                  "subset_outcomes"):
        store.write(table, source.read(table))
    tasks = sorted(store.read("task_sketches")["task"])
    assert main(["select", "--root", store.root, "--budget-fraction", "0.1", "--task-weight", f"{tasks[0]}=3"]) == 0
    selections = store.read("curated_selections")
    pool = store.read("corpus_shards").height
    assert set(selections.filter(pl.col("method") == "grasp_global")["budget"]) == {max(1, round(0.1 * pool))}
    # the re-curation's own target is recorded with it, so its lineage rebuilds the same selection
    (grasp_id,) = selections.filter(pl.col("method") == "grasp_global")["selection_id"].unique().to_list()
    assert main(["lineage", grasp_id, "--root", store.root, "--reproduce"]) == 0
    assert main(["mixture", "--root", store.root, "--budget-fraction", "0.1"]) == 0
    sums = store.read("mixture_weights").group_by("method").agg(pl.col("weight").sum())
    assert all(abs(w - 1) < 1e-9 for w in sums["weight"])
    lineage = store.read("lineage")
    assert set(lineage["asset"]) == {"curated_selection (grasp select)", "mixture_weights (grasp mixture)"}


def test_grasp_select_reports_its_new_table_version_to_the_dagster_instance(pipeline_run, tmp_path, monkeypatch):
    """The UI hears about out-of-band writes: a runless materialisation with the Delta version and data version."""
    from assets.cli import main

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "surrogates"):
        store.write(table, source.read(table))
    assert main(["select", "--root", store.root, "--budget-fraction", "0.1"]) == 0
    assert main(["select", "--root", store.root, "--budget-fraction", "0.2"]) == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("curated_selections"))
        assert event.run_id == "" or not instance.get_run_by_id(event.run_id)  # no Dagster run behind it
        materialization = event.asset_materialization
        assert materialization.metadata["curated_selections.delta_version"].value == store.version("curated_selections")
        version = store.version("curated_selections")
        assert materialization.tags["dagster/data_version"] == f"curated_selections@{version}"
        assert "grasp select" in materialization.description
        assert instance.get_latest_materialization_event(dg.AssetKey("lineage")) is not None


def test_grasp_select_with_an_unknown_task_weight_fails_naming_it(pipeline_run, tmp_path, capsys):
    from assets.cli import main

    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    # the peer mixers of `grasp mixture` fit on the plan's fit subsets and their outcomes too
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "surrogates", "subset_plan",
                  "subset_outcomes"):
        store.write(table, source.read(table))
    assert main(["select", "--root", store.root, "--task-weight", "no_such_task=2"]) == 2
    assert "no_such_task" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["lineage", "--tolerance", "nan", "x"], "argument --tolerance: must be a finite number ≥ 0, got 'nan'"),
    (["lineage", "--tolerance", "-1", "x"], "argument --tolerance: must be a finite number ≥ 0, got '-1'"),
    (["run", "--wait", "nan"], "argument --wait: must be a finite number ≥ 0, got 'nan'"),
    (["select", "--wait", "inf"], "argument --wait: must be a finite number ≥ 0, got 'inf'"),
    (["maintain", "--wait", "soon"], "argument --wait: 'soon' is not a number"),
])
def test_a_number_option_that_is_not_a_finite_number_in_range_stops_at_the_door(args, message, tmp_path, capsys):
    from assets.cli import main

    root = tmp_path / "storage"
    with pytest.raises(SystemExit) as stopped:
        main([*args, "--root", str(root)] if args[0] != "lineage" else args)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert not root.exists()  # nothing was started, let alone written


def test_a_new_dagster_home_gets_the_repository_instance_settings(tmp_path):
    """Run monitoring, the run queue and the torch pool come from deploy/dagster.yaml: a DAGSTER_HOME
    the command line creates must hold exactly that file (not an empty instance with no limits)."""
    from assets.cli.instance import ensure_dagster_home

    home = Path(ensure_dagster_home(tmp_path / "home"))
    template = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"
    assert (home / "dagster.yaml").read_text() == template.read_text()


def test_grasp_run_help_names_every_workload_and_the_default_the_settings_use(capsys):
    from assets.cli import main
    from grasp_pipeline.config import WorkloadParams
    from grasp_pipeline.workloads import WORKLOADS

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"one of {', '.join(sorted(WORKLOADS))} (default: {WorkloadParams().name})" in text


def test_the_command_line_starts_without_importing_torch():
    """`grasp --help` and argument errors answer at once: torch loads only when a command runs."""
    code = "import sys, assets.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_parent_run_logs_the_active_workloads_fields_only_and_the_source(grasp_run):
    from dataclasses import fields

    from mlflow.tracking import MlflowClient

    from grasp_pipeline.config import WorkloadParams
    from grasp_pipeline.config.workload import WorkloadChoice
    from grasp_pipeline.infra.tracking import default_tracking_uri, git_commit
    from grasp_pipeline.workloads import workload_parameter_names

    tmp_path, _, _ = grasp_run
    client = MlflowClient(tracking_uri=default_tracking_uri(str(tmp_path / "storage")))
    experiment = client.get_experiment_by_name("grasp-pipeline")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.`grasp.profile` = 'smoke'")
    name = parent.data.params["workload.name"]
    logged = {k.removeprefix("workload.") for k in parent.data.params if k.startswith("workload.")}
    assert logged == {f.name for f in fields(WorkloadChoice)} | workload_parameter_names(name)
    assert {f.name for f in fields(WorkloadParams)} - logged  # other workloads' fields exist and are left out
    assert parent.data.tags["mlflow.source.name"] == "grasp run --profile smoke"
    assert parent.data.tags.get("mlflow.source.git.commit") == git_commit()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

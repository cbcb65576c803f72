"""The held-out verdict where users look: the curation_test asset page (Markdown table, figure, a few
named figures, checks that state it), its MLflow run (table artifact, figure, the experiment kind),
`grasp report` and every table's column descriptions in the catalog. Read from the tiny pipeline's
real Dagster run, MLflow store and Delta tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from mlflow.tracking import MlflowClient

from grasp_pipeline.evaluation.summary import format_summary, verdict_table
from grasp_pipeline.evaluation.verdict_report import HEADLINES, read_verdict
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.infra.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, default_tracking_uri, git_commit

GRASP = Path(sys.executable).with_name("grasp")


@pytest.fixture(scope="module")
def verdict(pipeline_run):
    root, results, instance = pipeline_run
    assert all(r.success for r in results)
    return verdict_table(DeltaStore(str(root)), "curation_test_verdict")


def _curation_test_metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey("curation_test"))
    return event.asset_materialization.metadata


def test_the_curation_test_asset_shows_the_verdict_as_a_markdown_table_with_its_figure(pipeline_run, verdict):
    metadata = _curation_test_metadata(pipeline_run[2])
    markdown = metadata["verdict"].value
    assert "| comparison | gain | 95% interval | verdict | candidates | dev retrainings |" in markdown
    for row in verdict.iter_rows(named=True):
        assert (f"| {row['comparison']} | {row['gain']:+.4f} | [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
                in markdown), row["comparison"]
    assert "](data:image/png;base64," in markdown


def test_the_curation_test_asset_carries_a_few_named_figures_not_every_metric(pipeline_run, verdict):
    metadata = _curation_test_metadata(pipeline_run[2])
    assert not [k for k in metadata if k.startswith("test.")]  # the stage's metrics stay in MLflow
    scalars = {k.removeprefix("verdict."): v.value for k, v in metadata.items() if k.startswith("verdict.")}
    assert len(scalars) <= 12
    rows = {r["comparison"]: r for r in verdict.iter_rows(named=True)}
    pick = rows["grasp − random_pick"]
    assert scalars["grasp_vs_random_pick.gain"] == pytest.approx(pick["gain"])
    assert scalars["grasp_vs_random_pick.ci_low"] == pytest.approx(pick["ci_low"])
    assert sum(scalars[f"comparisons_{v}"] for v in ("ahead", "level", "behind")) == verdict.height


def test_the_verdict_checks_pass_only_when_the_difference_interval_is_above_zero(pipeline_run, verdict):
    _, results, instance = pipeline_run
    evaluations = {e.check_name: e for r in results for e in r.get_asset_check_evaluations()}
    rows = {r["comparison"]: r for r in verdict.iter_rows(named=True)}
    names = {"grasp": "grasp_selection_beats_random_pick", "mixture-grasp": "grasp_mixture_beats_regmix"}
    for method, reference, claim in HEADLINES:
        evaluation = evaluations[names[method]]
        row = rows[f"{method} − {reference}"]
        assert evaluation.passed == (row["ci_low"] > 0), claim
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["ci_low"].value == pytest.approx(row["ci_low"])
        assert claim in evaluation.description


def test_the_curation_test_mlflow_run_has_the_verdict_table_and_figure_and_the_experiment_kind(pipeline_run, verdict,
                                                                                             tmp_path):
    root = pipeline_run[0]
    uri = default_tracking_uri(str(root))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("grasp-pipeline")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.`dagster.asset` = 'curation_test'")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curation_test_verdict.json", "curation_test_verdict.png", "curation_test_verdict.md"} <= artifacts
    # an MLflow table: the run lists it as one, and it holds the verdict's rows
    assert {"path": "curation_test_verdict.json", "type": "table"} in json.loads(
        run.data.tags["mlflow.loggedArtifacts"])
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "curation_test_verdict.json",
                                                       str(tmp_path))).read_text())
    column = {name: [row[i] for row in logged["data"]] for i, name in enumerate(logged["columns"])}
    assert column["comparison"] == verdict["comparison"].to_list()
    assert column["ci_low"] == pytest.approx(verdict["ci_low"].to_list())
    assert run.data.tags["mlflow.source.name"] == "grasp_pipeline/stages/curation_test.py"
    assert run.data.tags.get("mlflow.source.git.commit") == git_commit()
    assert "test.grasp.ci_low" in run.data.metrics or any(k.startswith("test.") for k in run.data.metrics)


def _grasp(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRASP), *args], capture_output=True, text=True, timeout=300)


def test_grasp_report_prints_the_summary_grasp_run_prints_from_the_tables(pipeline_run):
    root = str(pipeline_run[0])
    completed = _grasp("report", "--root", root)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == format_summary(DeltaStore(root)).strip()
    assert "HELD-OUT VERDICT" in completed.stdout


def test_the_summary_states_the_surrogates_calibration_on_the_loops_candidates_per_round(pipeline_run):
    """Issue 26's calibration figure (slope of realised on predicted dev gain over what the loop
    optimised), recomputed here from curation_rounds with numpy, per round and over all rounds."""
    import numpy as np
    import polars as pl

    from grasp_pipeline.evaluation.summary import calibration_table

    store = DeltaStore(str(pipeline_run[0]))
    table = calibration_table(store)
    rounds = store.read("curation_rounds")
    grasp = rounds.filter((pl.col("kind") == "selection") & (pl.col("proposer") == "grasp"))
    assert grasp.height >= 3
    for round_ in [*map(str, sorted(grasp["round"].unique())), "all"]:
        mine = grasp if round_ == "all" else grasp.filter(pl.col("round") == int(round_))
        row = table.filter((pl.col("kind") == "selection") & (pl.col("proposer") == "grasp")
                           & (pl.col("round") == round_)).row(0, named=True)
        assert row["candidates"] == mine.height
        assert row["mean_predicted"] == pytest.approx(mine["predicted_gain"].mean())
        if mine.height >= 3 and mine["predicted_gain"].n_unique() > 1:
            assert row["slope"] == pytest.approx(np.polyfit(mine["predicted_gain"], mine["realised_gain"], 1)[0])
        else:
            assert row["slope"] is None
    assert set(table["proposer"]) >= {"grasp", "random_pick"}  # the control's beside it
    assert "Surrogate calibration on the loop's candidates" in format_summary(store)


def test_grasp_report_as_json_and_markdown_carries_the_verdicts_figures(pipeline_run, verdict):
    root = str(pipeline_run[0])
    as_json = json.loads(_grasp("report", "--root", root, "--format", "json").stdout)
    rows = as_json["curation_test_verdict"]["rows"]
    assert [r["comparison"] for r in rows] == verdict["comparison"].to_list()
    assert [r["gain"] for r in rows] == pytest.approx(verdict["gain"].to_list())
    assert {(r["method"], r["reference"]) for r in rows} >= {(m, r) for m, r, _ in HEADLINES}
    dev = verdict_table(DeltaStore(root), "validation_verdict")
    assert [r["comparison"] for r in as_json["validation_verdict"]["rows"]] == dev["comparison"].to_list()
    markdown = _grasp("report", "--root", root, "--format", "md").stdout
    assert markdown == "\n\n".join(read_verdict(DeltaStore(root), t).markdown()
                                   for t in ("curation_test_verdict", "validation_verdict")) + "\n"


def test_grasp_report_on_a_root_without_a_run_says_so(tmp_path):
    completed = _grasp("report", "--root", str(tmp_path))
    assert completed.returncode == 2 and "no finished run here" in completed.stderr


def test_every_column_of_every_table_a_run_writes_has_a_description_in_the_catalog(pipeline_run):
    from assets.definitions import defs
    from grasp_pipeline.stages.columns import column_description

    store = DeltaStore(str(pipeline_run[0]))
    graph = defs.resolve_asset_graph()
    tables = [k.to_user_string() for k in graph.toposorted_asset_keys if store.exists(k.to_user_string())]
    assert len(tables) > 20
    missing = [f"{t}.{c}" for t in tables for c in store.read(t).columns if not column_description(t, c)]
    assert missing == []
    for table in tables:  # the definitions show the same descriptions before anything is materialised
        schema = graph.get(dg.AssetKey(table)).metadata["dagster/column_schema"]
        assert all(c.description == column_description(table, c.name) for c in schema.columns), table
        assert {c.name for c in schema.columns} == set(store.read(table).columns), table
    # and each materialisation's schema carries them
    event = pipeline_run[2].get_latest_materialization_event(dg.AssetKey("curation_test_verdict"))
    written = event.asset_materialization.metadata["dagster/column_schema"].value
    assert written.columns and all(c.description for c in written.columns)


def test_the_verdict_figure_draws_one_interval_per_comparison(pipeline_run, verdict):
    shown = read_verdict(DeltaStore(str(pipeline_run[0])))
    figure = shown.figure()
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_yticklabels()] == list(reversed(verdict["comparison"].to_list()))
    points = [line.get_xdata()[0] for line in axes.lines if line.get_marker() == "o"]
    assert points == pytest.approx(list(reversed(verdict["gain"].to_list())))

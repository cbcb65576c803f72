"""MLflow as its users expect: batched logging, mlflow.data inputs naming the Delta versions read,
nested runs, failed parents, optional system metrics — against a real MLflow store."""

from __future__ import annotations

import json
import time

import pytest
from mlflow.tracking import MlflowClient

from grasp_pipeline.infra.tracking import (
    BATCH_ENTITIES,
    BATCH_PARAMS_OR_TAGS,
    PARENT_RUN_TAG,
    TrackedRun,
    Tracker,
    TrackingError,
    TrackingPolicy,
    default_tracking_uri,
)


class CountingClient:
    """The real MlflowClient, counting the requests each method makes."""

    def __init__(self, client: MlflowClient):
        self.client, self.calls = client, {}

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def counted(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def tracker(tmp_path):
    return Tracker(default_tracking_uri(str(tmp_path)), artifact_root=str(tmp_path / "artifacts"))


def test_params_metrics_and_tags_go_in_batches_within_mlflows_limits(tracker):
    params = {f"p{i:03d}": i for i in range(250)}
    metrics = {f"m{i:04d}": float(i) for i in range(2500)}
    tags = {f"t{i:03d}": str(i) for i in range(150)}
    with tracker.run("batched") as run:
        run.client = CountingClient(run.client)
        run.log_params(params)
        run.log_metrics(metrics)
        run.set_tags(tags)
        run.log_metric_points([("curve", float(step) / 10, step) for step in range(1500)])
    assert run.client.calls == {"log_batch": -(-250 // BATCH_PARAMS_OR_TAGS) + -(-2500 // BATCH_ENTITIES)
                                + -(-150 // BATCH_PARAMS_OR_TAGS) + -(-1500 // BATCH_ENTITIES)}
    stored = tracker.client.get_run(run.run_id).data
    assert stored.params == {k: str(v) for k, v in params.items()}
    assert stored.metrics == {**metrics, "curve": 149.9} and {k: stored.tags[k] for k in tags} == tags
    history = tracker.client.get_metric_history(run.run_id, "curve")
    assert sorted(m.step for m in history) == list(range(1500))


def test_every_table_version_read_is_an_mlflow_data_input(tracker, tmp_path):
    reads = {"gradient_sketches": 3, "surrogates": 7}
    with tracker.run("inputs") as run:
        run.log_table_inputs(reads, lambda table: f"{tmp_path}/storage/{table}")
    inputs = tracker.client.get_run(run.run_id).inputs.dataset_inputs
    found = {i.dataset.name: i for i in inputs}
    assert set(found) == set(reads)
    for table, version in reads.items():
        dataset = found[table].dataset
        assert dataset.source_type == "delta_table" and dataset.digest == f"{table}@{version}"
        assert json.loads(dataset.source) == {"path": f"{tmp_path}/storage/{table}", "delta_table_version": version}
        assert {t.key: t.value for t in found[table].tags}["mlflow.data.context"] == "read"


def test_a_child_run_nests_under_its_parent_and_a_parent_can_end_failed(tracker):
    with tracker.run("parent") as parent:
        with tracker.run("child", parent_run_id=parent.run_id) as child:
            pass
        parent.mark_failed()
    assert tracker.client.get_run(child.run_id).data.tags[PARENT_RUN_TAG] == parent.run_id
    assert tracker.client.get_run(child.run_id).info.status == "FINISHED"
    assert tracker.client.get_run(parent.run_id).info.status == "FAILED"


def test_system_metrics_are_sampled_into_the_run_when_asked(tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    tracker = Tracker(default_tracking_uri(str(tmp_path)), system_metrics=True)
    with tracker.run("busy") as run:
        time.sleep(3.5)
    metrics = tracker.client.get_run(run.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)
    assert any(k.startswith("system/system_memory_usage") for k in metrics), sorted(metrics)
    quiet = Tracker(default_tracking_uri(str(tmp_path)))  # off by default
    with quiet.run("quiet") as run:
        time.sleep(1.5)
    assert not [k for k in quiet.client.get_run(run.run_id).data.metrics if k.startswith("system/")]


def test_each_stage_run_names_its_inputs_and_the_reference_model_logs_its_loss_per_step(pipeline_run):
    from grasp_pipeline.infra.storage import DeltaStore

    from .conftest import tiny_params

    root, _, _ = pipeline_run
    client = MlflowClient(tracking_uri=default_tracking_uri(str(root)))
    experiment = client.get_experiment_by_name("grasp-pipeline").experiment_id
    (surrogate_run,) = client.search_runs([experiment], filter_string="tags.`dagster.asset` = 'surrogates'")
    reads = {k.removeprefix("read_version."): int(v) for k, v in surrogate_run.data.tags.items()
             if k.startswith("read_version.")}
    assert {i.dataset.name: i.dataset.digest for i in surrogate_run.inputs.dataset_inputs} == {
        t: f"{t}@{v}" for t, v in reads.items()}
    assert reads["subset_outcomes"] == DeltaStore(str(root)).version("subset_outcomes")
    (reference_run,) = client.search_runs([experiment], filter_string="tags.`dagster.asset` = 'reference_model'")
    losses = client.get_metric_history(reference_run.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, tiny_params().reference.steps + 1))
    assert reference_run.data.metrics["stage_seconds"] > 0


@pytest.fixture
def unreachable_run(monkeypatch):
    """A TrackedRun whose tracking server is gone (nothing listens on its port), one quick attempt per call."""
    from tests.services import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    return TrackedRun(client, "0" * 32, TrackingPolicy(attempts=2, backoff_seconds=0.01))


def test_batched_logging_and_inputs_are_bounded_by_the_tracking_policy(unreachable_run):
    with pytest.raises(TrackingError, match="MLflow log_batch failed after 2 attempts"):
        unreachable_run.log_params({"a": 1})
    with pytest.raises(TrackingError, match="MLflow log_batch failed after 2 attempts"):
        unreachable_run.log_metric_points([("train_loss", 1.0, 0)])
    with pytest.raises(TrackingError, match="MLflow log_inputs failed after 2 attempts"):
        unreachable_run.log_table_inputs({"corpus_shards": 0}, lambda table: f"/tmp/{table}")


def test_metric_curves_never_stop_a_stage_while_mlflow_is_down_and_the_final_flush_says_so(unreachable_run):
    from assets.reporting import MlflowCurves
    from grasp_pipeline.infra.progress import ProgressEvent

    curves = MlflowCurves(unreachable_run, batch=2)
    for step in range(6):  # three batches' worth: the first fails, the rest wait for the final flush
        curves(ProgressEvent("warm-up", "step", step, 6, 0.0, metrics={"train_loss": 1.0 / (step + 1)}))
    assert curves.deferred and len(curves.points) == 6  # nothing lost
    with pytest.raises(TrackingError):
        curves.flush()
    assert len(curves.points) == 6


def test_the_experiment_is_named_by_the_setting_or_the_environment_and_opens_on_the_training_view(tmp_path,
                                                                                                  monkeypatch):
    from grasp_pipeline.infra.tracking import EXPERIMENT, EXPERIMENT_ENV, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    uri = default_tracking_uri(str(tmp_path))
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment(Tracker(uri).experiment_id).name == EXPERIMENT  # the default is unchanged
    monkeypatch.setenv(EXPERIMENT_ENV, "from-the-environment")
    assert client.get_experiment(Tracker(uri).experiment_id).name == "from-the-environment"
    assert client.get_experiment(Tracker(uri, experiment="configured").experiment_id).name == "configured"
    older = client.create_experiment("made-before-the-tag")  # an experiment an older version created
    Tracker(uri, experiment="made-before-the-tag")
    for name in (EXPERIMENT, "from-the-environment", "configured", "made-before-the-tag"):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND, name
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_a_run_names_its_source_and_the_git_commit_of_the_checkout(tracker):
    import subprocess
    from pathlib import Path

    from grasp_pipeline.infra.tracking import git_commit

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    with tracker.run("stage", source="grasp_pipeline/stages/surrogates.py") as run:
        pass
    tags = tracker.client.get_run(run.run_id).data.tags
    assert tags["mlflow.source.name"] == "grasp_pipeline/stages/surrogates.py"
    assert tags.get("mlflow.source.git.commit") == (head.stdout.strip() if head.returncode == 0 else None)
    assert git_commit() == tags.get("mlflow.source.git.commit")


def test_a_verdict_table_is_logged_as_an_mlflow_table(tracker, tmp_path):
    import polars as pl

    frame = pl.DataFrame({"comparison": ["grasp − random_pick"], "gain": [0.01], "ci_low": [-0.02]})
    with tracker.run("table") as run:
        run.log_table(frame, "verdict.json")
    stored = json.loads(open(tracker.client.download_artifacts(run.run_id, "verdict.json", str(tmp_path))).read())
    assert stored == {"columns": frame.columns, "data": [list(r) for r in frame.iter_rows()]}

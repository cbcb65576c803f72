"""Operating the pipeline: job defaults and presets, the schedule, the new-corpus sensor and the
declarative automation after it, staleness after a corpus change, lineage (explained and
reproduced), and out-of-band writes reported to the instance."""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest
import yaml

from grasp_pipeline.config import load_params
from grasp_pipeline.infra.lineage import provenance
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.ops.reproduce import reproduce

from .conftest import copy_root, materialize_prepare, tiny_params, write_user_corpus


@pytest.fixture(scope="module")
def defs():
    from assets.definitions import defs as definitions

    return definitions


# ---------------------------------------------------------------- jobs and their config


def test_jobs_exist_and_their_default_config_is_the_demo_profile(defs):
    from dagster._config import process_config

    from assets.jobs import JOB_NAMES
    from assets.run_config import job_run_config

    demo = load_params("demo")
    for name in JOB_NAMES:
        job = defs.resolve_job_def(name)
        defaults = process_config(job.run_config_schema.config_type, {})  # what the launchpad starts from
        assert defaults.success, (name, defaults.errors)
        expected = job_run_config(name, demo)
        for op, section in expected["ops"].items():
            assert defaults.value["ops"][op]["config"] == section["config"], (name, op)
        if "workload" in defaults.value["resources"]:  # jobs whose assets train or encode
            assert defaults.value["resources"]["workload"]["config"] == expected["resources"]["workload"]["config"]
    assert set(defs.resolve_job_def("grasp_refresh_sketches_and_surrogate").asset_layer.executable_asset_keys) == {
        dg.AssetKey(a) for a in ["reference_models", "gradient_sketches", "task_sketches", "surrogates",
                                 "surrogate_candidates", "surrogate_predictions", "fidelity_report"]}
    assert defs.resolve_job_def("grasp_prepare").tags.get("grasp/torch") == "true"
    assert "grasp/torch" not in defs.resolve_job_def("grasp_reoptimise_mixture").tags


def test_grasp_config_prints_the_smoke_profile_for_the_launchpad(defs, capsys):
    from assets.cli import main

    for job in ("grasp_prepare", "grasp_retrain", "grasp_fit_and_curate", "grasp_reoptimise_mixture"):
        assert main(["config", "--profile", "smoke", "--job", job]) == 0
        config = yaml.safe_load(capsys.readouterr().out)
        assert dg.validate_run_config(defs.resolve_job_def(job), config)
    assert main(["config", "--profile", "smoke", "--job", "grasp_prepare", "--root", "/tmp/x"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["ops"]["corpus_shards"]["config"]["pool_examples_per_domain"] == 120  # smoke, not demo's 400
    assert config["resources"]["storage"]["config"]["root"] == "/tmp/x"


# ---------------------------------------------------------------- schedule


def test_the_mixture_schedule_is_off_by_default_and_requests_a_valid_run(defs, monkeypatch, tmp_path):
    from assets.schedules import build_schedules

    schedule = defs.resolve_schedule_def("grasp_reoptimise_mixture_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "grasp_reoptimise_mixture"
    monkeypatch.setenv("GRASP_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("GRASP_PROFILE", "smoke")
    with dg.instance_for_test() as instance:
        request = schedule(dg.build_schedule_context(instance=instance))
    assert request.run_config["resources"]["storage"]["config"]["root"] == str(tmp_path / "storage")
    assert dg.validate_run_config(defs.resolve_job_def("grasp_reoptimise_mixture"), request.run_config)
    monkeypatch.setenv("GRASP_MIXTURE_CRON", "*/30 * * * *")
    (custom,) = build_schedules()
    assert custom.cron_schedule == "*/30 * * * *"
    monkeypatch.setenv("GRASP_MIXTURE_CRON", "every night")
    with pytest.raises(ValueError, match="GRASP_MIXTURE_CRON"):
        build_schedules()


# ---------------------------------------------------------------- sensors


def test_new_corpus_files_request_prepare_on_the_folder(defs, monkeypatch, tmp_path, tiny_config_file):
    incoming, root = tmp_path / "incoming", tmp_path / "storage"
    monkeypatch.setenv("GRASP_WATCH_DIR", str(incoming))
    monkeypatch.setenv("GRASP_ROOT", str(root))
    monkeypatch.setenv("GRASP_PROFILE", "smoke")
    monkeypatch.setenv("GRASP_CONFIG", str(tiny_config_file))
    watcher = defs.resolve_sensor_def("grasp_new_corpus_files")
    assert watcher.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        empty = watcher.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        assert not empty.run_requests and "no corpus files" in empty.skip_message

        write_user_corpus(incoming / "batch-1.jsonl")
        (incoming / ".partial.jsonl").write_text("{}")  # a writer's temporary file is not picked up
        (incoming / "notes.txt").write_text("not a corpus file")
        first = watcher.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
        (request,) = first.run_requests
        assert watcher.job_name == "grasp_prepare"
        assert request.run_config["ops"]["corpus_shards"]["config"]["corpus_path"] == str(incoming)
        assert request.run_config["ops"]["corpus_shards"]["config"]["pool_examples_per_domain"] == 24  # GRASP_CONFIG
        assert [f[0] for f in json.loads(first.cursor)] == ["batch-1.jsonl"]

        again = watcher.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                              definitions=defs))
        assert not again.run_requests and "no new or changed" in again.skip_message

        write_user_corpus(incoming / "more" / "batch-2.jsonl", domains=("essays", "docs"),
                          source_domains=("french_literature", "python_docs"))
        second = watcher.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor,
                                                               definitions=defs))
        (request,) = second.run_requests
        assert request.run_key != first.run_requests[0].run_key
        assert "1 new or changed" in request.tags["grasp/trigger"]
        assert dg.validate_run_config(defs.resolve_job_def("grasp_prepare"), request.run_config)


DOWNSTREAM_OF_PREPARE = ["task_sketches", "surrogates", "surrogate_candidates", "surrogate_predictions",
                         "fidelity_report", "curation_rounds", "active_outcomes", "curated_selections",
                         "mixture_weights", "selection_validation", "validation_verdict", "curation_test",
                         "curation_test_verdict", "curation_test_dirt",
                         "target_check", "target_check_summary", "trainer_export"]


def test_after_a_prepare_run_automation_requests_every_shard_and_batch_then_everything_downstream(defs, tmp_path):
    """Declarative automation (eager) replaces the run-status sensor chain: after the corpus-triggered
    prepare run it requests every shard and every batch; once those are materialised, the rest of
    the graph in one go; and nothing twice."""
    from assets.jobs import job_range_tags
    from assets.run_config import job_run_config

    root, home = tmp_path / "storage", tmp_path / "dagster_home"
    home.mkdir()
    assert defs.resolve_sensor_def("grasp_automation").default_status == dg.DefaultSensorStatus.STOPPED
    params = tiny_params(corpus={"corpus_path": str(write_user_corpus(tmp_path / "incoming" / "batch-1.jsonl"))})
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the sensor is on, ticking
        assert tick.total_requested == 0  # no corpus yet: nothing can run
        assert materialize_prepare(root, params, instance, ["corpus_shards", "reference_model", "subset_plan"]).success
        shards = instance.get_dynamic_partitions("corpus_shards")
        batches = instance.get_dynamic_partitions("retraining_batches")
        assert len(shards) > 1 and batches

        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert tick.get_requested_partitions(dg.AssetKey("gradient_sketches")) == set(shards)
        assert tick.get_requested_partitions(dg.AssetKey("subset_outcomes")) == set(batches)
        assert tick.total_requested == len(shards) + len(batches)  # downstream waits for its missing inputs

        for job in ("grasp_sketch", "grasp_retrain"):  # what the daemon launches for those requests
            ran = defs.resolve_job_def(job).execute_in_process(
                run_config=job_run_config(job, params, str(root)), instance=instance,
                tags=job_range_tags(instance, job))
            assert ran.success, job
        tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert {k.to_user_string() for k in DOWNSTREAM_KEYS if tick.get_num_requested(k)} == set(DOWNSTREAM_OF_PREPARE)
        assert tick.total_requested == len(DOWNSTREAM_OF_PREPARE)

        quiet = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=tick.cursor)
        assert quiet.total_requested == 0  # handled: nothing is requested twice


DOWNSTREAM_KEYS = [dg.AssetKey(a) for a in DOWNSTREAM_OF_PREPARE]


# ---------------------------------------------------------------- staleness


def _stale_status(defs, instance, asset: str):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    key = dg.AssetKey(asset)
    return resolver.get_status(key), [cause.key.asset_key.to_user_string() for cause in
    resolver.get_stale_root_causes(key)]


def test_a_corpus_change_marks_downstream_assets_stale(defs, tmp_path):
    from dagster._core.definitions.data_version import StaleStatus

    root = tmp_path / "storage"
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        assert materialize_prepare(root, tiny_params(), instance, ["corpus_shards", "reference_model"]).success
        status, _ = _stale_status(defs, instance, "reference_models")
        assert status == StaleStatus.FRESH
        record = instance.get_latest_materialization_event(dg.AssetKey("corpus_shards"))
        assert record.asset_materialization.tags["dagster/data_version"] == "corpus_shards@0"
        record = instance.get_latest_materialization_event(dg.AssetKey("task_sets"))
        assert record.asset_materialization.tags["dagster/data_version"] == "task_sets@0"

        corpus = write_user_corpus(tmp_path / "new" / "corpus.jsonl")
        assert materialize_prepare(root, tiny_params(corpus={"corpus_path": str(corpus)}), instance,
                                   ["corpus_shards"]).success
        record = instance.get_latest_materialization_event(dg.AssetKey("corpus_shards"))
        assert record.asset_materialization.tags["dagster/data_version"] == "corpus_shards@1"
        status, causes = _stale_status(defs, instance, "reference_models")
        assert status == StaleStatus.STALE and causes == ["corpus_shards"]
        assert _stale_status(defs, instance, "corpus_shards")[0] == StaleStatus.FRESH


# ---------------------------------------------------------------- lineage


def _ids(root, table: str, column: str) -> list[str]:
    return sorted(DeltaStore(str(root)).read(table)[column].unique().to_list())


def test_grasp_lineage_explains_and_reproduces_a_selection(pipeline_run, capsys):
    from assets.cli import main

    root, results, instance = pipeline_run
    assert all(r.success for r in results)
    # grasp_global: the stage's own greedy, which the selection settings shape (grasp is the loop's pick)
    (selection,) = [i for i in _ids(root, "curated_selections", "selection_id") if i.endswith("-grasp_global")]
    assert main(["lineage", selection, "--root", str(root), "--reproduce"]) == 0
    out = capsys.readouterr().out
    assert f"{selection} is in curated_selections@" in out and "reproduce: MATCH" in out
    store = DeltaStore(str(root))
    model_version = store.read("reference_models")["model_version"][0]
    assert f"reference model: {model_version}" in out
    for asset in ("corpus_shards", "reference_model", "gradient_sketches", "surrogates", "subset_outcomes"):
        assert f"asset={asset}" in out
    surrogate_run = store.read("surrogates")["mlflow_run_id"][0]
    assert surrogate_run in out  # MLflow run ids of the chain
    assert results[0].run_id in out  # Dagster run ids of the chain

    # the same lineage is in the materialisation's metadata
    event = instance.get_latest_materialization_event(dg.AssetKey("curated_selections"))
    shown = event.asset_materialization.metadata["lineage"].value
    assert shown["model_version"] == model_version and "surrogates" in shown["reads"]


def test_grasp_lineage_json_and_reproduce_a_mixture(pipeline_run, capsys):
    from assets.cli import main

    root, _, _ = pipeline_run
    mixture = [i for i in _ids(root, "mixture_weights", "mixture_id") if i.endswith("-grasp")][0]
    assert main(["lineage", mixture, "--root", str(root), "--kind", "mixture", "--reproduce", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["table"] == "mixture_weights" and payload["reproduce"]["matches"]
    tables = {row["table"] for row in payload["chain"]}
    assert {"mixture_weights", "surrogates", "gradient_sketches", "reference_models", "corpus_shards",
            "subset_outcomes", "subset_plan"} <= tables
    corpus_row = next(r for r in payload["chain"] if r["table"] == "corpus_shards")
    assert payload["corpus_content_sha1"] == corpus_row["facts"]["corpus_content_sha1"]
    assert all(row["dagster_run_id"] and row["mlflow_run_id"] and row["code_version"] for row in payload["chain"])


def test_reproduce_uses_the_recorded_versions_and_reports_a_mismatch(pipeline_run, tmp_path, capsys):
    """On a copy of a finished run: rewriting an input does not change the reproduction (it
    reads the recorded versions through time travel); tampered parameters give a diff and exit 1."""
    from assets.cli import main

    root = tmp_path / "storage"
    store = copy_root(pipeline_run[0], root)
    # grasp_global: the stage's own greedy, which the selection settings shape (grasp is the loop's pick)
    (selection,) = [i for i in _ids(root, "curated_selections", "selection_id") if i.endswith("-grasp_global")]
    table_version = store.version("curated_selections")
    sketches = store.read("gradient_sketches")
    store.write("gradient_sketches", sketches.with_columns(pl.col("sketch").list.eval(pl.element() * 3)))
    assert reproduce(store, selection)["matches"]  # still read gradient_sketches at the recorded version

    found = provenance(store, "curated_selections", table_version)
    tampered = {**found["chain"][0], "params": {**found["chain"][0]["params"], "trust_region": 10.0,
                                                "protect_rounds": 0}}
    # lineage lives in the commit: a tampered record needs a new commit of the same rows
    store.write("curated_selections", store.read("curated_selections", version=table_version), lineage=tampered)
    assert provenance(store, "curated_selections", table_version + 1)["chain"][0]["params"]["trust_region"] == 10.0
    assert main(["lineage", selection, "--root", str(root), "--reproduce"]) == 1
    err = capsys.readouterr().err
    assert "MISMATCH" in err and "rows differ" in err

    assert main(["lineage", "sg-nope-grasp", "--root", str(root)]) == 2
    assert "no selection or mixture with id" in capsys.readouterr().err

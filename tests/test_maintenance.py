"""History that lasts: retention properties on new tables, and maintenance (compaction, checkpoints,
vacuum) that keeps every version lineage needs, so `grasp lineage --reproduce` still matches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from grasp_pipeline.config import MaintenanceParams
from grasp_pipeline.infra.commits import LINEAGE_KEY
from grasp_pipeline.infra.lease import RootLease
from grasp_pipeline.infra.lineage import (
    LINEAGE_TABLE,
    MAINTENANCE_OPERATIONS,
    find_output,
    index_lineage,
    logged_versions,
    provenance,
    rebuild_lineage_index,
)
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.ops.maintenance import kept_versions, maintain
from grasp_pipeline.ops.reproduce import reproduce
from grasp_pipeline.stages import TableWrite

from .conftest import copy_root


def _copy(pipeline_run, tmp_path) -> DeltaStore:
    return copy_root(pipeline_run[0], tmp_path / "storage")


def _grasp_selection(store: DeltaStore, method: str = "grasp") -> str:
    ids = store.read("curated_selections")["selection_id"].unique().to_list()
    return next(i for i in ids if i.endswith(f"-{method}"))


def _data_files(store: DeltaStore, table: str) -> list[Path]:
    return [p for p in Path(store.uri(table)).rglob("*.parquet") if "_delta_log" not in p.parts]


def _readable(store: DeltaStore, table: str, version: int) -> bool:
    try:
        store.read(table, version=version)
        return True
    except Exception:  # a vacuumed version: its files are gone
        return False


def test_tables_are_created_with_a_log_retention_long_enough_for_lineage(tmp_path):
    store = DeltaStore(str(tmp_path / "storage"), log_retention_days=400)
    store.write("mixture_weights", pl.DataFrame({"mixture_id": ["m"], "method": ["natural"], "domain": ["a"],
                                                 "weight": [1.0], "predicted_utility": [0.0]}),
                lineage={"asset": "test", "reads": {}})
    configuration = DeltaTable(store.uri("mixture_weights")).metadata().configuration
    assert configuration["delta.logRetentionDuration"] == "interval 400 days"
    assert configuration["delta.deletedFileRetentionDuration"] == "interval 7 days"
    assert index_lineage(store, [TableWrite("mixture_weights", 0, 1, {})]) == 1
    assert "delta.logRetentionDuration" in DeltaTable(store.uri(LINEAGE_TABLE)).metadata().configuration


@pytest.fixture
def maintained(pipeline_run, tmp_path):
    """A copy of a finished run with an unrecorded rewrite of task_sketches (v+1, then v+2 = v's rows
    again), maintained with a zero retention window."""
    store = _copy(pipeline_run, tmp_path)
    recorded = store.version("task_sketches")
    sketches = store.read("task_sketches")
    store.write("task_sketches", sketches.with_columns(pl.col("loss") * 2))  # nothing records this version
    store.write("task_sketches", sketches)
    lineage_files = len(_data_files(store, LINEAGE_TABLE))
    reports = maintain(store, MaintenanceParams(retention_hours=0))
    return store, recorded, lineage_files, {r.table: r for r in reports}


def test_maintenance_vacuums_an_unrecorded_version_and_keeps_every_recorded_one(maintained):
    store, recorded, _, reports = maintained
    assert not _readable(store, "task_sketches", recorded + 1)  # its files were deleted
    assert reports["task_sketches"].vacuumed  # ... by this maintenance
    log = store.read(LINEAGE_TABLE)
    for table, version, reads in log.select("table", "version", "reads").iter_rows():
        assert _readable(store, table, version), (table, version)
        for read_table, read_version in json.loads(reads).items():
            assert _readable(store, read_table, read_version), (read_table, read_version)


def test_maintenance_compacts_the_lineage_appends_and_checkpoints_every_table(maintained):
    store, _, lineage_files_before, reports = maintained
    assert reports[LINEAGE_TABLE].compacted > 0
    assert len(DeltaTable(store.uri(LINEAGE_TABLE)).file_uris()) < lineage_files_before
    assert len(_data_files(store, LINEAGE_TABLE)) < lineage_files_before  # the small files are gone from disk
    for table, report in reports.items():
        assert report.checkpoint and list(Path(store.uri(table), "_delta_log").glob("*.checkpoint.parquet")), table
        assert DeltaTable(store.uri(table)).metadata().configuration["delta.logRetentionDuration"] == \
            "interval 3650 days"


def test_grasp_lineage_reproduce_still_matches_after_maintenance(maintained, capsys):
    from assets.cli import main

    store, _, _, _ = maintained
    selection = _grasp_selection(store)
    assert main(["lineage", selection, "--root", store.root, "--reproduce"]) == 0
    out = capsys.readouterr().out
    assert "reproduce: MATCH" in out and "asset=corpus_shards" in out
    mixture = next(i for i in store.read("mixture_weights")["mixture_id"].unique().to_list() if i.endswith("-grasp"))
    assert reproduce(store, mixture, table="mixture_weights")["matches"]
    table, version = find_output(store, selection)
    assert store.read("lineage").filter((pl.col("table") == table) & (pl.col("version") == version))["asset"][0] == \
        "curated_selection"  # the version a selection is "in" is the stage's, never a maintenance commit


def test_a_selection_made_after_maintenance_traces_through_the_maintenance_commits(maintained, capsys, monkeypatch,
                                                                                   tmp_path):
    from assets.cli import main

    # its own instance: `grasp select` reports the copy's new version, which the shared run's catalog must not hear
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    store, recorded, _, _ = maintained
    assert main(["select", "--root", store.root, "--budget-fraction", "0.3"]) == 0
    capsys.readouterr()
    # at another budget than the loop's only the stage's own greedy is re-curated (README: Re-curating)
    selection = _grasp_selection(store, "grasp_global")
    table, version = find_output(store, selection)
    found = provenance(store, table, version)
    # every version read has lineage, maintenance commits included; only the fixture's hand-written
    # task_sketches version (under the maintenance commits) was never recorded
    assert found["missing"] == [{"table": "task_sketches", "version": recorded + 2}]
    assert "maintenance" in {row["asset"] for row in found["chain"]}
    assert found["corpus_content_sha1"]
    assert reproduce(store, selection)["matches"]


def test_keep_outputs_frees_recorded_versions_no_selection_or_mixture_needs(pipeline_run, tmp_path):
    store = _copy(pipeline_run, tmp_path)
    candidates = store.read("surrogate_candidates")
    for _ in range(2):  # two recorded rewrites nothing downstream reads
        version = store.write("surrogate_candidates", candidates, lineage={"asset": "surrogates", "reads": {}})
        index_lineage(store, [TableWrite("surrogate_candidates", version, candidates.height, {})])
    middle = store.version("surrogate_candidates") - 1
    assert middle in kept_versions(store, "lineage")["surrogate_candidates"]
    assert middle not in kept_versions(store, "outputs").get("surrogate_candidates", set())
    maintain(store, MaintenanceParams(retention_hours=0, keep="outputs", compact=False))
    assert not _readable(store, "surrogate_candidates", middle)
    assert reproduce(store, _grasp_selection(store))["matches"]


def test_a_dry_run_changes_nothing_and_lists_what_would_go(pipeline_run, tmp_path):
    store = _copy(pipeline_run, tmp_path)
    sketches = store.read("task_sketches")
    store.write("task_sketches", sketches.with_columns(pl.col("loss") * 2))
    store.write("task_sketches", sketches)
    versions = {t: store.version(t) for t in ("task_sketches", LINEAGE_TABLE)}
    files = len(_data_files(store, "task_sketches"))
    reports = {r.table: r for r in maintain(store, MaintenanceParams(retention_hours=0, dry_run=True))}
    assert reports["task_sketches"].vacuumed
    assert {t: store.version(t) for t in versions} == versions and len(_data_files(store, "task_sketches")) == files


def test_grasp_maintain_reports_each_table_to_the_dagster_instance(pipeline_run, tmp_path, monkeypatch, capsys):
    import dagster as dg

    from assets.cli import main

    store = _copy(pipeline_run, tmp_path)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["maintain", "--root", store.root, "--retention-hours", "0", "--table", "lineage",
                 "--table", "task_sketches"]) == 0
    assert "reported to the Dagster instance" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for table in ("lineage", "task_sketches"):
            (record,) = instance.fetch_observations(dg.AssetKey(table), limit=1).records
            assert record.asset_observation.metadata["delta_version"].value == store.version(table)
    assert main(["maintain", "--root", store.root, "--table", "no_such_table"]) == 2
    assert "no_such_table" in capsys.readouterr().err


def test_every_maintenance_commit_carries_its_lineage_in_the_commit(maintained):
    store, recorded, _, reports = maintained
    report = reports["task_sketches"]
    operations = logged_versions(store, "task_sketches")
    ours = [v for v in range(report.version_before + 1, report.version_after + 1)]
    assert ours and {operations[v] for v in ours} <= MAINTENANCE_OPERATIONS
    for version in ours:
        record = store.commit_info("task_sketches", version)[LINEAGE_KEY]
        assert record["asset"] == "maintenance" and record["reads"] == {"task_sketches": report.version_before}
        assert record["params"]["retention_hours"] == 0
    indexed = store.read(LINEAGE_TABLE).filter(pl.col("table") == "task_sketches")["version"].to_list()
    assert set(ours) <= set(indexed)  # ... and is indexed like a stage's


def test_vacuum_keeps_what_the_commits_record_when_the_lineage_index_is_gone(pipeline_run, tmp_path):
    store = _copy(pipeline_run, tmp_path)
    shutil.rmtree(store.uri(LINEAGE_TABLE))  # only the commits know the lineage now
    recorded, sketches = store.version("task_sketches"), store.read("task_sketches")
    store.write("task_sketches", sketches.with_columns(pl.col("loss") * 2))
    store.write("task_sketches", sketches)
    maintain(store, MaintenanceParams(retention_hours=0))
    assert not _readable(store, "task_sketches", recorded + 1) and _readable(store, "task_sketches", recorded)
    assert reproduce(store, _grasp_selection(store))["matches"]
    assert rebuild_lineage_index(store) > 0
    assert "maintenance" in set(store.read(LINEAGE_TABLE)["asset"])


def test_grasp_maintain_stops_while_another_writer_holds_the_root_and_commits_nothing(pipeline_run, tmp_path,
                                                                                      capsys):
    from assets.cli import main

    store = _copy(pipeline_run, tmp_path)
    versions = {t: store.version(t) for t in ("task_sketches", LINEAGE_TABLE)}
    other = RootLease(store.root, purpose="grasp run --profile demo").acquire()
    try:
        assert main(["maintain", "--root", store.root, "--retention-hours", "0"]) == 2
    finally:
        other.release()
    assert "is in use by another writer: grasp run --profile demo" in capsys.readouterr().err
    assert {t: store.version(t) for t in versions} == versions

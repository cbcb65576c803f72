"""Faults at scale: writers killed mid-write, concurrent partition writers, damaged Delta logs,
diverging retraining, degenerate outcomes, and dirty corpus files.

Every case checks two things: the error names what is wrong (table, file, row, field, task),
and the tables are exactly as they were before (same version, same rows). Writers run in
real subprocesses against real Delta tables, locally and on an S3-compatible server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from grasp_pipeline import stages
from grasp_pipeline.corpus import CorpusError, load_documents
from grasp_pipeline.infra.storage import DeltaStore, PinnedReads, TableLogError

from .conftest import build_tables_until, copy_root, spawn_pool, tiny_params, write_user_corpus
from .partition_writers import outcome_rows, write_one_batch

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- a writer killed mid-write

WRITER = """
import sys, numpy as np, polars as pl
from grasp_pipeline.infra.storage import DeltaStore
from tests.partition_writers import outcome_rows
root, batch, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
DeltaStore(root).write_partitions("subset_outcomes", outcome_rows(batch, n))
"""


def data_files(store: DeltaStore, table: str, partition: str) -> list[str]:
    """Data files present under one partition folder, referenced by the log or not."""
    if store.is_local:
        folder = Path(store.uri(table)) / partition
        return sorted(p.name for p in folder.glob("*")) if folder.exists() else []
    import boto3

    bucket, prefix = store.uri(table)[len("s3://"):].split("/", 1)
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{partition}/")
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=f"{prefix}/{partition}/").get("Uploads", [])
    return sorted([o["Key"] for o in listed.get("Contents", [])] + [u["Key"] for u in uploads])


@pytest.mark.parametrize("first_write", [False, True], ids=["existing-table", "first-write"])
def test_a_writer_killed_mid_write_leaves_the_previous_version_and_a_rerun_has_no_duplicates(any_root, first_write):
    store = DeltaStore(any_root)
    if not first_write:
        store.write_partitions("subset_outcomes", outcome_rows("b0", 100))
        store.write_partitions("subset_outcomes", outcome_rows("b1", 100, offset=100))
    version = store.version("subset_outcomes")
    before = store.read("subset_outcomes") if version is not None else None

    # a writer replacing batch b1 with 3M rows (~ a second or more of Parquet encoding and upload)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, any_root, "b1", "3000000"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    existing = set(data_files(store, "subset_outcomes", "batch=b1"))
    deadline = time.monotonic() + 120
    while not set(data_files(store, "subset_outcomes", "batch=b1")) - existing:  # its first data file appears
        assert writer.poll() is None, f"the writer finished before it could be killed: {writer.stdout.read()}"
        assert time.monotonic() < deadline, "the writer never started writing data files"
        time.sleep(0.01)
    assert store.version("subset_outcomes") == version, "the writer committed before it was killed"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL

    assert store.version("subset_outcomes") == version
    if first_write:  # nothing was ever committed: readers are told so, a rerun simply creates the table
        with pytest.raises((TableLogError, FileNotFoundError), match="first write to it was interrupted|not found"):
            store.read("subset_outcomes")
        rerun = outcome_rows("b1", 150, offset=100)
        assert store.write_partitions("subset_outcomes", rerun) == 0
        assert_frame_equal(store.read("subset_outcomes").sort("subset_id"), rerun, check_column_order=False)
        return
    assert_frame_equal(store.read("subset_outcomes").sort("subset_id"), before.sort("subset_id"))

    rerun = outcome_rows("b1", 150, offset=100)
    new_version = store.write_partitions("subset_outcomes", rerun)
    assert new_version == version + 1
    after = store.read("subset_outcomes")
    assert after.height == 100 + 150
    assert after["subset_id"].is_unique().all()
    assert_frame_equal(after.filter(pl.col("batch") == "b1").sort("subset_id"), rerun, check_column_order=False)
    assert_frame_equal(after.filter(pl.col("batch") == "b0").sort("subset_id"),
                       before.filter(pl.col("batch") == "b0").sort("subset_id"))


# ----------------------------------------------------------------------------- concurrent partition writers

@pytest.mark.parametrize("table_exists", [True, False], ids=["existing-table", "first-write-races"])
def test_eight_partitions_written_concurrently_lose_nothing(any_root, table_exists):
    store = DeltaStore(any_root)
    if table_exists:
        store.write_partitions("subset_outcomes", outcome_rows("b8", 50, offset=400))
    with spawn_pool(8) as pool:
        versions = pool.starmap(write_one_batch, [(any_root, b) for b in range(8)])
    table = store.read("subset_outcomes")
    expected_batches = 9 if table_exists else 8
    assert table.height == 50 * expected_batches
    assert table["subset_id"].is_unique().all()
    assert sorted(table["batch"].unique().to_list()) == sorted(f"b{b}" for b in range(expected_batches))
    for b in range(8):
        assert_frame_equal(table.filter(pl.col("batch") == f"b{b}").sort("subset_id"),
                           outcome_rows(f"b{b}", 50, offset=50 * b), check_column_order=False)
    # each writer reports the version it committed: all distinct, and the last one is the table's
    assert len(set(versions)) == 8
    assert max(versions) == store.version("subset_outcomes")


def test_eight_writers_that_each_remove_a_stale_partition_concurrently_lose_nothing(any_root):
    # the shard runs of a new corpus, on workers of their own: each write names the current batches,
    # so each may remove the old corpus's batch, and none may remove another's new one
    store = DeltaStore(any_root)
    store.write_partitions("subset_outcomes", outcome_rows("old", 50, offset=400))
    current = [f"b{b}" for b in range(8)]
    with spawn_pool(8) as pool:
        versions = pool.starmap(write_one_batch, [(any_root, b, current) for b in range(8)])
    table = store.read("subset_outcomes")
    assert sorted(table["batch"].unique().to_list()) == current
    for b in range(8):
        assert_frame_equal(table.filter(pl.col("batch") == f"b{b}").sort("subset_id"),
                           outcome_rows(f"b{b}", 50, offset=50 * b), check_column_order=False)
    assert len(set(versions)) == 8 and max(versions) == store.version("subset_outcomes")


def test_object_store_credentials_are_not_in_the_store_repr(s3_root):
    store = DeltaStore(s3_root)
    assert store.storage_options["AWS_SECRET_ACCESS_KEY"] == os.environ["AWS_SECRET_ACCESS_KEY"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in repr(store)
    assert os.environ["AWS_ACCESS_KEY_ID"] not in repr(store)


# ----------------------------------------------------------------------------- damaged Delta logs

@pytest.fixture
def two_version_table(tmp_path) -> DeltaStore:
    store = DeltaStore(str(tmp_path / "root"))
    store.write_partitions("subset_outcomes", outcome_rows("b0", 10))
    store.write_partitions("subset_outcomes", outcome_rows("b1", 10, offset=10))
    return store


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_corrupted_commit_file_is_a_clear_error_and_nothing_is_written(two_version_table):
    store = two_version_table
    table = Path(store.uri("subset_outcomes"))
    (table / "_delta_log" / f"{1:020d}.json").write_text('{"add": {"path": "batch=b1/part-0')  # torn write
    files = snapshot(table)
    for attempt in (lambda: store.read("subset_outcomes"), lambda: store.version("subset_outcomes"),
                    lambda: PinnedReads(store).read("subset_outcomes"),
                    lambda: store.write_partitions("subset_outcomes", outcome_rows("b2", 5, offset=20)),
                    lambda: store.write("subset_outcomes", outcome_rows("b2", 5, offset=20))):
        with pytest.raises(TableLogError, match=r"Delta table 'subset_outcomes' at .*subset_outcomes: its Delta "
                                                r"log \(_delta_log\) cannot be read"):
            attempt()
    assert snapshot(table) == files


def test_a_missing_delta_log_is_a_clear_error_for_readers_and_nothing_is_deleted(two_version_table):
    store = two_version_table
    table = Path(store.uri("subset_outcomes"))
    shutil.rmtree(table / "_delta_log")
    files = snapshot(table)
    for attempt in (lambda: store.read("subset_outcomes"), lambda: PinnedReads(store).read("subset_outcomes")):
        with pytest.raises(TableLogError, match=r"'subset_outcomes' .*no Delta log \(_delta_log is missing\)\. "
                                                r"Either the first write to it was interrupted.*or _delta_log was "
                                                r"deleted \(restore it from a backup"):
            attempt()
    assert snapshot(table) == files

# ----------------------------------------------------------------------------- pipeline stages on bad data

@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Every table up to subset_outcomes for the tiny config, built once by the library stages."""
    root = tmp_path_factory.mktemp("prepared") / "root"
    build_tables_until(root, "subset_outcomes")
    return root


@pytest.fixture
def store_copy(prepared, tmp_path) -> DeltaStore:
    return copy_root(prepared, tmp_path / "root")


def test_a_diverging_warm_up_names_the_setting_and_writes_no_model(store_copy):
    store, params = store_copy, tiny_params()
    version, files = store.version("reference_models"), sorted(p.name for p in (Path(store.root) / "checkpoints")
                                                                 .rglob("*"))
    diverging = replace(params.reference, lr=float("inf"))  # past validation: what a bad workload could do too
    with pytest.raises(FloatingPointError, match=r"reference model diverged: warm-up loss nan, non-finite "
                                                 r"parameters \[.+\]; lower reference.lr \(now inf\)"):
        stages.run_reference_model(store, params.workload.build(), diverging)
    assert store.version("reference_models") == version
    assert sorted(p.name for p in (Path(store.root) / "checkpoints").rglob("*")) == files  # no new checkpoint


def test_a_diverging_retraining_names_subset_and_task_and_writes_no_partition(store_copy):
    store, params = store_copy, tiny_params()
    version, before = store.version("subset_outcomes"), store.read("subset_outcomes")
    batches = sorted(store.read("subset_plan")["batch"].unique().to_list())
    diverging = replace(params.retrain, lr=float("inf"))  # the first Adam step sends every weight to ±inf → NaN loss
    with pytest.raises(FloatingPointError,
                       match=r"subset_outcomes: \d+ of \d+ rows are not finite \(first: subset_id=\d+, task='\w+', "
                             r"batch='[^']+': loss=nan, utility=nan\); retraining diverged: lower retrain.lr"):
        stages.run_subset_outcomes(store, params.workload.build(), diverging, batches=[batches[0]])
    assert store.version("subset_outcomes") == version
    assert_frame_equal(store.read("subset_outcomes"), before)


def test_a_task_whose_utilities_do_not_vary_stops_the_surrogate_naming_the_task(store_copy):
    store = store_copy
    outcomes = store.read("subset_outcomes")
    task = sorted(outcomes["task"].unique().to_list())[0]
    flat = outcomes.with_columns(
        pl.when(pl.col("task") == task).then(pl.lit(2.5)).otherwise(pl.col("loss")).alias("loss"))
    store.write("subset_outcomes", flat.with_columns(utility=-pl.col("loss")))
    versions = {t: store.version(t) for t in ("surrogates", "surrogate_predictions")}
    with pytest.raises(ValueError, match=rf"task '{task}': utility is the same .* for all \d+ fit subsets"):
        stages.run_surrogates(store, tiny_params().surrogate)
    assert {t: store.version(t) for t in versions} == versions  # none written


BAD_CORPORA = {
    # name: (file name, bytes or writer, the error must match)
    "malformed JSONL line": ("c.jsonl", b'{"domain": "news", "text": "fine"}\n{"domain": "news", "text": \n',
                             r"c\.jsonl: line 2 is not valid JSON"),
    "Parquet text of wrong type": ("c.parquet", pl.DataFrame({"domain": ["news", "news"], "text": [3, 4]}),
                                   r"c\.parquet: row 0: column 'text' must hold strings"),
    "Parquet domain of wrong type": ("c.parquet", pl.DataFrame({"domain": [1.5], "text": ["words"]}),
                                     r"c\.parquet: row 0: column 'domain' must hold strings"),
    "empty file": ("c.jsonl", b"", r"c\.jsonl: every file is empty|no documents in .*c\.jsonl"),
    "duplicate ids": ("c.jsonl", b'{"id": "d1", "domain": "news", "text": "one"}\n'
                                 b'{"id": "d1", "domain": "news", "text": "two"}\n',
                      r"duplicate document id 'd1': .*c\.jsonl line 1 and .*c\.jsonl line 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_a_bad_corpus_is_named_and_leaves_the_corpus_tables_unchanged(store_copy, tmp_path, case):
    name, content, pattern = BAD_CORPORA[case]
    path = tmp_path / "bad" / name
    path.parent.mkdir()
    if isinstance(content, pl.DataFrame):
        content.write_parquet(path)
    else:
        path.write_bytes(content)
    store = store_copy
    before = {t: (store.version(t), store.read(t)) for t in ("corpus_shards", "task_sets")}
    params = tiny_params(corpus={"corpus_path": str(path)})
    with pytest.raises(CorpusError, match=pattern):
        stages.run_corpus_shards(store, params.corpus, params.workload.example_bytes)
    for table, (version, frame) in before.items():
        assert store.version(table) == version
        assert_frame_equal(store.read(table), frame)


def test_a_domain_too_small_for_its_task_set_leaves_the_corpus_tables_unchanged(store_copy, tmp_path):
    corpus = write_user_corpus(tmp_path / "small.jsonl", docs_per_domain=1)
    params = tiny_params(corpus={"corpus_path": str(corpus), "task_examples_per_domain": 500})
    version = store_copy.version("corpus_shards")
    with pytest.raises(CorpusError, match=r"domain '(news|code|poetry)'.*task_examples_per_domain"):
        stages.run_corpus_shards(store_copy, params.corpus, params.workload.example_bytes)
    assert store_copy.version("corpus_shards") == version


# ----------------------------------------------------------------------------- property: corpus ingest

DOMAIN = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200).filter(lambda t: t.strip())
DOCS = st.lists(st.tuples(DOMAIN, TEXT), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, fmt=st.sampled_from(["jsonl", "parquet"]))
def test_ingest_property_every_document_round_trips_with_its_domain(tmp_path_factory, docs, fmt):
    folder = tmp_path_factory.mktemp("ingest")
    rows = [{"id": f"doc-{i}", "domain": d, "text": t} for i, (d, t) in enumerate(docs)]
    if fmt == "jsonl":
        (folder / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pl.DataFrame(rows).write_parquet(folder / "c.parquet")
    documents, report = load_documents(folder)
    assert report.documents == len(docs)
    assert report.replaced_bytes == 0
    got = sorted(zip(documents["domain"].to_list(), documents["text"].to_list()))
    assert got == sorted(docs)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=DOCS, bad_line=st.integers(min_value=0, max_value=11), junk=st.sampled_from(["{", "not json", "[1,",
                                                                                         '{"text": 1']))
def test_ingest_property_a_broken_line_anywhere_is_named_by_its_number(tmp_path_factory, docs, bad_line, junk):
    folder = tmp_path_factory.mktemp("ingest_bad")
    lines = [json.dumps({"domain": d, "text": t}) for d, t in docs]
    bad_line = min(bad_line, len(lines))
    lines.insert(bad_line, junk)
    (folder / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=rf"c\.jsonl: line {bad_line + 1}\b"):
        load_documents(folder)

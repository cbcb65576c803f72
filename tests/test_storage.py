"""Tests for grasp_pipeline.infra.storage: real Delta tables in tmp_path, read back independently.

Contents are read back both through the store and with `deltalake.DeltaTable` directly, so
a test does not only trust the code under test to report what it wrote.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from grasp_pipeline.infra.storage import CONTRACT, ContractError, DeltaStore, check_contract


def shard_frame(shard: str, ids: list[int], text: str = "x") -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame({"example_id": ids, "shard": [shard] * n, "domain": ["d"] * n, "text": [text] * n,
                         "n_bytes": [len(text)] * n, "source": ["s"] * n, "content_sha1": [f"h{i}" for i in ids]},
                        schema={"example_id": pl.Int64, "shard": pl.Utf8, "domain": pl.Utf8, "text": pl.Utf8,
                                "n_bytes": pl.Int64, "source": pl.Utf8, "content_sha1": pl.Utf8})


def selection_frame(ids: list[int], method: str = "grasp") -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame({"selection_id": ["sel"] * n, "method": [method] * n, "example_id": ids,
                         "rank": list(range(n)), "gain": [0.5] * n, "domain": ["d"] * n, "budget": [n] * n},
                        schema={"selection_id": pl.Utf8, "method": pl.Utf8, "example_id": pl.Int64,
                                "rank": pl.Int64, "gain": pl.Float64, "domain": pl.Utf8, "budget": pl.Int64})


def outcome_frame(batch) -> pl.DataFrame:
    frame = pl.DataFrame({"subset_id": [0, 1], "task": ["t", "t"], "loss": [1.0, 2.0], "utility": [-1.0, -2.0],
                          "repeat": [0, 0], "steps": [5, 5], "seconds": [0.1, 0.1]},
                         schema_overrides={"subset_id": pl.Int64, "repeat": pl.Int64, "steps": pl.Int64})
    return frame if batch is None else frame.with_columns(batch=pl.lit(batch))


def sorted_rows(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(sorted(frame.columns)).sort(sorted(frame.columns))


def raw_read(store: DeltaStore, table: str) -> pl.DataFrame:
    """The table's latest content read with deltalake itself, not through the store."""
    return pl.from_arrow(DeltaTable(store.uri(table)).to_pyarrow_table())


@pytest.fixture
def store(tmp_path) -> DeltaStore:
    return DeltaStore(str(tmp_path / "root"))


# -----------------------------------------------------------------------------
# full writes


def test_write_replaces_the_table_without_duplicating_rows(store):
    store.write("curated_selections", selection_frame([1, 2, 3]))
    version = store.write("curated_selections", selection_frame([7, 8]))
    assert version == 1
    assert sorted(store.read("curated_selections")["example_id"].to_list()) == [7, 8]
    assert sorted(raw_read(store, "curated_selections")["example_id"].to_list()) == [7, 8]


def test_writing_the_same_frame_twice_is_idempotent(store):
    frame = selection_frame([4, 5, 6])
    store.write("curated_selections", frame)
    store.write("curated_selections", frame)
    assert_frame_equal(sorted_rows(store.read("curated_selections")), sorted_rows(frame))


def test_each_table_lives_in_a_folder_named_after_it_under_the_root(store, tmp_path):
    store.write("curated_selections", selection_frame([1]))
    assert DeltaTable.is_deltatable(str(tmp_path / "root" / "curated_selections"))
    assert store.exists("curated_selections") and not store.exists("mixture_weights")


def test_reading_an_old_version_returns_the_old_content(store):
    first, second = selection_frame([1, 2, 3], "grasp"), selection_frame([9], "random-0")
    v0 = store.write("curated_selections", first)
    v1 = store.write("curated_selections", second)
    assert (v0, v1) == (0, 1)
    assert_frame_equal(sorted_rows(store.read("curated_selections", version=v0)), sorted_rows(first))
    assert_frame_equal(sorted_rows(store.read("curated_selections", version=v1)), sorted_rows(second))
    assert_frame_equal(sorted_rows(store.read("curated_selections")), sorted_rows(second))


def test_reading_a_missing_table_names_it(store):
    with pytest.raises(FileNotFoundError, match="mixture_weights"):
        store.read("mixture_weights")
    assert store.version("mixture_weights") is None


def test_extra_columns_beyond_the_contract_are_kept(store):
    frame = selection_frame([1, 2]).with_columns(note=pl.lit("extra"))
    store.write("curated_selections", frame)
    assert store.read("curated_selections")["note"].to_list() == ["extra", "extra"]


# -----------------------------------------------------------------------------
# the contract guards every write


def broken_frames():
    good = selection_frame([1, 2])
    return {
        "missing": (good.drop("gain"), "gain"),
        "wrong type": (good.with_columns(pl.col("example_id").cast(pl.Int32)), "example_id"),
        "string number": (good.with_columns(pl.col("budget").cast(pl.Utf8)), "budget"),
    }


@pytest.mark.parametrize("case", ["missing", "wrong type", "string number"])
def test_a_write_that_breaks_the_contract_names_table_and_column_and_changes_nothing(store, case):
    original = selection_frame([10, 11, 12])
    store.write("curated_selections", original)
    frame, column = broken_frames()[case]
    with pytest.raises(ContractError, match=f"curated_selections.*{column}"):
        store.write("curated_selections", frame)
    assert store.version("curated_selections") == 0
    assert DeltaTable(store.uri("curated_selections")).version() == 0
    assert_frame_equal(sorted_rows(raw_read(store, "curated_selections")), sorted_rows(original))


def test_a_contract_breaking_first_write_creates_no_table(store):
    with pytest.raises(ContractError):
        store.write("curated_selections", selection_frame([1]).drop("rank"))
    assert not store.exists("curated_selections")


def test_partition_values_with_spaces_are_refused_and_nothing_is_written(store):
    store.write_partitions("corpus_shards", shard_frame("s0", [0, 1]))
    with pytest.raises(ContractError, match="corpus_shards.*shard"):
        store.write_partitions("corpus_shards", shard_frame("shard 1", [2]))
    with pytest.raises(ContractError, match="corpus_shards.*shard"):
        store.write("corpus_shards", shard_frame("tab\there", [3]))
    assert store.version("corpus_shards") == 0
    assert sorted(raw_read(store, "corpus_shards")["example_id"].to_list()) == [0, 1]


def test_null_partition_values_are_refused(store):
    frame = shard_frame("s0", [0, 1]).with_columns(
        shard=pl.when(pl.col("example_id") == 1).then(None).otherwise(pl.col("shard")))
    with pytest.raises(ContractError, match="corpus_shards.*shard"):
        store.write_partitions("corpus_shards", frame)


def test_every_contract_table_accepts_a_frame_with_exactly_its_columns():
    for table, columns in CONTRACT.items():
        frame = pl.DataFrame(schema=columns)
        if table == "subset_outcomes":
            frame = frame.with_columns(batch=pl.lit("b0"))
        check_contract(table, frame)  # no exception


def test_a_missing_partition_column_is_a_contract_error(store):
    with pytest.raises(ContractError, match="subset_outcomes.*batch"):
        store.write_partitions("subset_outcomes", outcome_frame(None))


def test_a_non_string_partition_column_is_a_contract_error(store):
    with pytest.raises(ContractError, match="subset_outcomes.*batch"):
        store.write_partitions("subset_outcomes", outcome_frame(3))


# -----------------------------------------------------------------------------
# partition writes


def test_partition_write_replaces_exactly_the_partitions_present_and_keeps_the_others(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("s0", [0, 1]), shard_frame("s1", [2, 3]),
                                                      shard_frame("s2", [4, 5])]))
    # rewrite s1 with different rows and add a new s3; s0 and s2 are not in the frame
    store.write_partitions("corpus_shards", pl.concat([shard_frame("s1", [20], "new"), shard_frame("s3", [30])]))
    table = raw_read(store, "corpus_shards")
    by_shard = {s: sorted(table.filter(pl.col("shard") == s)["example_id"].to_list())
                for s in table["shard"].unique()}
    assert by_shard == {"s0": [0, 1], "s1": [20], "s2": [4, 5], "s3": [30]}
    assert table.filter(pl.col("shard") == "s1")["text"].to_list() == ["new"]
    assert DeltaTable(store.uri("corpus_shards")).metadata().partition_columns == ["shard"]


def test_rerunning_a_partition_write_does_not_duplicate_rows(store):
    store.write_partitions("corpus_shards", shard_frame("s0", [0, 1]))
    store.write_partitions("corpus_shards", shard_frame("s1", [2, 3]))
    for _ in range(2):
        store.write_partitions("corpus_shards", shard_frame("s1", [2, 3]))
    assert sorted(store.read("corpus_shards")["example_id"].to_list()) == [0, 1, 2, 3]
    assert store.version("corpus_shards") == 3  # one new version per write


def test_partition_values_with_quotes_replace_only_their_partition(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("o'brien", [0]), shard_frame("o", [1])]))
    store.write_partitions("corpus_shards", shard_frame("o'brien", [2]))
    table = raw_read(store, "corpus_shards").sort("example_id")
    assert table.select("example_id", "shard").rows() == [(1, "o"), (2, "o'brien")]


def test_a_partition_write_with_current_keys_removes_the_other_partitions_in_the_same_commit(store):
    # corpus A's shards, then a write of corpus B's shards naming B's shard set as current
    store.write_partitions("corpus_shards", pl.concat([shard_frame("a0", [0]), shard_frame("a1", [1]),
                                                      shard_frame("b0", [2], "old")]))
    before = store.version("corpus_shards")
    lineage = {"asset": "test", "facts": {"model_version": "m"}}
    version = store.write_partitions("corpus_shards", pl.concat([shard_frame("b0", [10]), shard_frame("b1", [11])]),
                                     lineage=lineage, current=["b0", "b1", "b2"])
    assert version == before + 1  # one commit removed A's partitions and wrote B's
    assert len(DeltaTable(store.uri("corpus_shards")).history()) == before + 2
    table = raw_read(store, "corpus_shards")
    assert sorted(table.select("shard", "example_id").rows()) == [("b0", 10), ("b1", 11)]
    assert store.partition_values("corpus_shards", "shard") == ["b0", "b1"]
    # the commit's lineage names the partitions it removed; the caller's dict is left as it was
    facts = store.commit_info("corpus_shards", version)["grasp.lineage"]["facts"]
    assert facts == {"model_version": "m", "removed_partitions": ["a0", "a1"]}
    assert lineage == {"asset": "test", "facts": {"model_version": "m"}}
    # the version before the switch still holds corpus A (time travel)
    assert sorted(store.read("corpus_shards", version=before)["shard"].unique().to_list()) == ["a0", "a1", "b0"]


def test_a_partition_write_with_current_keys_keeps_other_current_partitions(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("b0", [0]), shard_frame("b1", [1]),
                                                      shard_frame("o'x", [2])]))
    version = store.write_partitions("corpus_shards", shard_frame("b1", [5]), lineage={"facts": {}},
                                     current=["b0", "b1"])
    assert sorted(raw_read(store, "corpus_shards").select("shard", "example_id").rows()) == [("b0", 0), ("b1", 5)]
    assert store.commit_info("corpus_shards", version)["grasp.lineage"]["facts"] == {"removed_partitions": ["o'x"]}
    # nothing stale: the lineage records no removal
    version = store.write_partitions("corpus_shards", shard_frame("b0", [6]), lineage={"facts": {}},
                                     current=["b0", "b1"])
    assert store.commit_info("corpus_shards", version)["grasp.lineage"]["facts"] == {}


def test_a_first_partition_write_with_current_keys_creates_the_table(store):
    store.write_partitions("subset_outcomes", outcome_frame("b0"), current=["b0", "b1"])
    assert store.partition_values("subset_outcomes", "batch") == ["b0"]


def test_an_old_version_still_holds_a_replaced_partition(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("s0", [0]), shard_frame("s1", [1])]))
    store.write_partitions("corpus_shards", shard_frame("s1", [9]))
    old = store.read("corpus_shards", version=0)
    assert sorted(old["example_id"].to_list()) == [0, 1]
    assert sorted(store.read("corpus_shards")["example_id"].to_list()) == [0, 9]


def test_a_partition_write_that_breaks_the_contract_keeps_every_partition(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("s0", [0]), shard_frame("s1", [1])]))
    broken = shard_frame("s1", [5]).with_columns(pl.col("n_bytes").cast(pl.Float64))
    with pytest.raises(ContractError, match="corpus_shards.*n_bytes"):
        store.write_partitions("corpus_shards", broken)
    assert store.version("corpus_shards") == 0
    assert sorted(raw_read(store, "corpus_shards")["example_id"].to_list()) == [0, 1]


def test_a_partition_write_of_an_empty_frame_replaces_nothing(store):
    store.write_partitions("corpus_shards", shard_frame("s0", [0, 1]))
    store.write_partitions("corpus_shards", shard_frame("s0", [0]).clear())
    assert sorted(store.read("corpus_shards")["example_id"].to_list()) == [0, 1]


def test_a_partition_write_may_add_a_column_beyond_the_contract(store):
    store.write_partitions("corpus_shards", pl.concat([shard_frame("s0", [0]), shard_frame("s1", [1])]))
    store.write_partitions("corpus_shards", shard_frame("s1", [2]).with_columns(score=pl.lit(0.5)))
    table = store.read("corpus_shards").sort("example_id")
    assert table.select("example_id", "score").rows() == [(0, None), (2, 0.5)]


# -----------------------------------------------------------------------------
# partition reads pushed down


@pytest.fixture
def any_store(any_root) -> DeltaStore:
    return DeltaStore(any_root)


def delete_partition_files(store: DeltaStore, table: str, column: str, value: str) -> int:
    """Deletes the data files of one partition behind the Delta log's back; returns how many."""
    files = DeltaTable(store.uri(table), storage_options=store.storage_options or None).file_uris(
        file_pruning_predicate=[(column, "=", value)])
    for uri in files:
        if store.is_local:
            Path(uri).unlink()
        else:
            import boto3

            bucket, key = uri.removeprefix("s3://").split("/", 1)
            boto3.client("s3", endpoint_url=store.storage_options["AWS_ENDPOINT_URL"], region_name="us-east-1",
                         aws_access_key_id=store.storage_options["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=store.storage_options["AWS_SECRET_ACCESS_KEY"]).delete_object(
                Bucket=bucket, Key=key)
    return len(files)


def three_shards(store: DeltaStore) -> pl.DataFrame:
    """Writes shards s0..s2 (s1 rewritten once, so the log also holds a removed file); returns the
    table's rows as a full read sees them."""
    for shard, ids in (("s0", [0, 1]), ("s1", [2, 3]), ("s2", [4, 5])):
        store.write_partitions("corpus_shards", shard_frame(shard, ids))
    store.write_partitions("corpus_shards", shard_frame("s1", [3, 2, 7], "new"))
    return store.read("corpus_shards")


def test_a_partition_read_opens_only_that_partitions_files(any_store):
    full = three_shards(any_store)
    assert delete_partition_files(any_store, "corpus_shards", "shard", "s2") == 1
    with pytest.raises(Exception, match="(?i)no such file|not found"):  # a full read needs the deleted file
        any_store.read("corpus_shards")
    one = any_store.read("corpus_shards", where={"shard": ["s1"]})
    assert_frame_equal(sorted_rows(one), sorted_rows(full.filter(pl.col("shard") == "s1")))
    two = any_store.read("corpus_shards", where={"shard": ["s0", "s1"]}, columns=["example_id", "shard"])
    assert_frame_equal(sorted_rows(two), sorted_rows(full.filter(pl.col("shard") != "s2").select("example_id",
                                                                                                  "shard")))


def test_a_partition_read_of_an_old_version_returns_that_versions_partition(store):
    three_shards(store)
    old = store.read("corpus_shards", version=1, where={"shard": ["s1"]})
    assert sorted(old["example_id"].to_list()) == [2, 3]


def test_partition_values_come_from_the_log_without_the_data_files(any_store):
    three_shards(any_store)
    for shard in ("s0", "s1", "s2"):
        delete_partition_files(any_store, "corpus_shards", "shard", shard)
    assert any_store.partition_values("corpus_shards", "shard") == ["s0", "s1", "s2"]
    assert any_store.partition_values("corpus_shards", "shard", version=0) == ["s0"]


def test_a_partition_filter_on_a_column_that_is_no_partition_is_refused(store):
    three_shards(store)
    with pytest.raises(ValueError, match="not partitioned by \\['domain'\\]"):
        store.read("corpus_shards", where={"domain": ["d"]})

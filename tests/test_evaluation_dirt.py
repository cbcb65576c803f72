"""evaluation.dirt: each selection's share of each kind of dirt and of redundant examples."""

from __future__ import annotations

import math

import polars as pl
import pytest

from grasp_pipeline.evaluation.dirt import dirt_shares

# id, content, dirt, dirt_source: a hand-built pool with one cluster of each shape
POOL = pl.DataFrame(
    [(1, "a", "clean", None), (2, "a", "exact_duplicate", "1"), (3, "a", "exact_duplicate", "1"),
     (4, "b", "near_duplicate", "1"), (5, "c", "clean", None), (6, "d", "garbled", "5"),
     (7, "e", "boilerplate", "boilerplate:x/t"), (8, "f", "boilerplate", "boilerplate:x/t"),
     (9, "c", "mislabelled", "5"), (10, "g", "clean", None)],
    schema={"example_id": pl.Int64, "content_sha1": pl.Utf8, "dirt": pl.Utf8, "dirt_source": pl.Utf8}, orient="row")


def shares(selections, pool=POOL) -> dict[str, dict]:
    return {row["method"]: row for row in dirt_shares(pool, selections).iter_rows(named=True)}


def test_shares_of_each_kind_over_the_whole_pool():
    row = shares({"all": range(1, 11)})["all"]
    assert row["examples"] == 10
    assert {k: row[k] for k in ("clean", "exact_duplicate", "near_duplicate", "boilerplate", "garbled",
                                "mislabelled")} == pytest.approx(
        {"clean": 0.3, "exact_duplicate": 0.2, "near_duplicate": 0.1, "boilerplate": 0.2, "garbled": 0.1,
         "mislabelled": 0.1})
    # groups: {1,2,3,4} (content a + cluster 1), {5,9} (content c), {6}, {7,8} (template), {10}
    assert row["redundant"] == pytest.approx(1 - 5 / 10)


def test_rows_follow_the_order_of_the_selections():
    assert dirt_shares(POOL, {"b": [1], "a": [2]})["method"].to_list() == ["b", "a"]


@pytest.mark.parametrize("ids, redundant", [
    ([4, 2], 0.5),   # a near and an exact duplicate of the same source: one cluster
    ([1, 4], 0.5),   # a clean example and a near duplicate made from it
    ([7, 8], 0.5),   # two variants of one boilerplate template
    ([5, 9], 0.5),   # same content filed under another domain
    ([5, 6], 0.0),   # a garbled example shares characters, not content, with its source
    ([10, 10], 0.5),  # one id selected twice
    ([1, 5, 7, 10], 0.0),
])
def test_redundant_counts_examples_whose_content_or_cluster_is_already_selected(ids, redundant):
    assert shares({"s": ids})["s"]["redundant"] == pytest.approx(redundant)


def test_an_empty_selection_has_nan_shares():
    row = shares({"none": []})["none"]
    assert row["examples"] == 0 and math.isnan(row["clean"]) and math.isnan(row["redundant"])


def test_an_unlabelled_pool_gives_redundancy_only():
    pool = POOL.select("example_id", "content_sha1")
    result = dirt_shares(pool, {"s": [1, 2, 4]})
    assert result.columns == ["method", "examples", "redundant"]
    assert result["redundant"][0] == pytest.approx(1 / 3)  # 1 and 2 share content; 4 stands alone unlabelled


def test_other_labels_and_missing_labels_get_their_own_columns():
    pool = POOL.with_columns(dirt=pl.when(pl.col("example_id") == 10).then(pl.lit("spam"))
                             .when(pl.col("example_id") == 5).then(None).otherwise(pl.col("dirt")))
    row = shares({"s": [5, 10, 1, 6]}, pool)["s"]
    assert list(row)[-4:] == ["mislabelled", "spam", "unlabelled", "redundant"]
    assert (row["spam"], row["unlabelled"], row["clean"], row["garbled"]) == (0.25, 0.25, 0.25, 0.25)


def test_ids_not_in_the_pool_are_refused_naming_the_selection():
    with pytest.raises(ValueError, match=r"selection 'grasp': 2 example ids are not in the pool \(e\.g\. 11\)"):
        dirt_shares(POOL, {"grasp": [1, 11, 12]})

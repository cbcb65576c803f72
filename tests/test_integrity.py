"""Tables that do not belong together are refused, naming what disagrees; lineage lives in the commits.

Each mix is what two interleaved writers leave behind (one table from each), built with the
real stages; the downstream stage must stop before writing anything.
"""

from __future__ import annotations

import json

import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.infra.commits import LINEAGE_KEY
from grasp_pipeline.infra.lineage import LINEAGE_TABLE, lineage_of, provenance, rebuild_lineage_index
from grasp_pipeline.infra.storage import DeltaStore

from .conftest import build_tables_until, copy_root, tiny_params


@pytest.fixture(scope="module")
def surrogate_root(tmp_path_factory):
    """Every table up to the surrogates for the tiny config, built once by the library stages."""
    root = tmp_path_factory.mktemp("integrity") / "root"
    build_tables_until(root, "surrogates")
    return root


@pytest.fixture
def store(surrogate_root, tmp_path) -> DeltaStore:
    return copy_root(surrogate_root, tmp_path / "root")


@pytest.fixture(scope="module")
def other_build(tmp_path_factory) -> DeltaStore:
    """The corpus tables of a second build (another pool seed) on another root."""
    root = tmp_path_factory.mktemp("other") / "root"
    return build_tables_until(root, "corpus_shards", tiny_params(corpus={"seed": 5}))


def versions(store: DeltaStore) -> dict:
    return {t: store.version(t) for t in ("task_sketches", "subset_outcomes", "surrogates", "curated_selections",
                                          "mixture_weights", "selection_validation")}


def test_corpus_shards_and_task_sets_of_one_build_share_a_build_id(store):
    pool, tasks = store.read("corpus_shards"), store.read("task_sets")
    assert pool["build_id"].n_unique() == 1 and pool["build_id"][0].startswith("cb-")
    assert set(tasks["build_id"]) == set(pool["build_id"])
    assert set(store.read("gradient_sketches")["build_id"]) == set(pool["build_id"])


def test_task_sets_of_another_corpus_build_are_refused_downstream(store, other_build):
    store.write("task_sets", other_build.read("task_sets"))  # a second build's tasks landed in between
    before = versions(store)
    params = tiny_params()
    with pytest.raises(ValueError, match=r"corpus_shards is from corpus build\(s\) \['cb-\w+'\] but task_sets from "
                                         r"\['cb-\w+'\]: .*different corpus builds"):
        stages.run_task_sketches(store, params.workload.build())
    with pytest.raises(ValueError, match=r"different corpus builds"):
        stages.run_subset_outcomes(store, params.workload.build(), params.retrain)
    assert versions(store) == before


def test_sketches_of_another_corpus_build_are_refused_naming_the_shards(store, other_build):
    sketches = store.read("gradient_sketches")
    shard = sketches["shard"][0]
    store.write("gradient_sketches", sketches.with_columns(
        pl.when(pl.col("shard") ==
        shard).then(pl.lit("cb-000000000000")).otherwise(pl.col("build_id")).alias("build_id")))
    with pytest.raises(ValueError, match=rf"gradient_sketches shards \['{shard}'\] were sketched from corpus build "
                                         r"cb-000000000000, but corpus_shards is build cb-"):
        stages.run_surrogates(store, tiny_params().surrogate)


def test_outcome_batches_retrained_with_different_recipes_are_refused_naming_the_batches(store):
    outcomes = store.read("subset_outcomes")
    batch = sorted(outcomes["batch"].unique().to_list())[-1]
    recipe = json.loads(outcomes["recipe"][0])
    other = json.dumps({**recipe, "steps": recipe["steps"] + 1}, sort_keys=True)
    store.write("subset_outcomes", outcomes.with_columns(
        pl.when(pl.col("batch") == batch).then(pl.lit(other)).otherwise(pl.col("recipe")).alias("recipe")))
    before = versions(store)
    with pytest.raises(ValueError, match=rf"subset_outcomes rows disagree on the retraining recipe .*batches "
                                         rf"\['{batch}'\]"):
        stages.run_surrogates(store, tiny_params().surrogate)
    assert versions(store) == before


def test_surrogate_tables_of_two_fits_are_refused_by_curation_and_the_mixture(store):
    predictions = store.read("surrogate_predictions")
    store.write("surrogate_predictions", predictions.with_columns(surrogate_id=pl.lit("sg-0123456789ab")))
    before = versions(store)
    params = tiny_params()
    for run in (lambda: stages.run_curated_selection(store, params.selection),
                lambda: stages.run_mixture_weights(store, params.mixture)):
        with pytest.raises(ValueError, match=r"the surrogate tables disagree on the surrogate \(surrogates: "
                                             r"\['sg-\w+'\]; .*surrogate_predictions: \['sg-0123456789ab'\]"):
            run()
    assert versions(store) == before


def test_selections_and_mixtures_of_different_surrogates_are_not_validated_together(store):
    params = tiny_params()
    stages.run_curated_selection(store, params.selection)
    stages.run_mixture_weights(store, params.mixture)
    mixtures = store.read("mixture_weights")
    store.write("mixture_weights", mixtures.with_columns(
        mixture_id=pl.lit("sg-0123456789ab-") + pl.col("method")))
    with pytest.raises(ValueError, match=r"curated_selections and mixture_weights come from different surrogates"):
        stages.run_selection_validation(store, params.workload.build(), params.validation)
    assert not store.exists("selection_validation")


# ------------------------------------------------------------------ lineage in the commit

def test_every_stage_commit_carries_its_lineage(store):
    for table in ("corpus_shards", "task_sets", "reference_models", "gradient_sketches", "subset_plan",
                  "subset_outcomes", "surrogates", "surrogate_predictions"):
        record = store.commit_info(table, store.version(table))[LINEAGE_KEY]
        assert record["table"] == table and record["asset"] and record["recorded_at"] > 0
    assert store.commit_info("surrogates", store.version("surrogates"))[LINEAGE_KEY]["reads"] == {
        t: store.version(t) for t in ("corpus_shards", "gradient_sketches", "reference_models", "subset_outcomes",
                                      "subset_plan", "task_sketches")}
    facts = store.commit_info("corpus_shards", 0)[LINEAGE_KEY]["facts"]
    assert facts["build_id"] == store.read("corpus_shards")["build_id"][0] and len(facts["corpus_content_sha1"]) == 12


def test_provenance_needs_no_lineage_table_and_the_index_is_rebuilt_from_the_commits(store):
    assert not store.exists(LINEAGE_TABLE)  # the library stages never wrote the index
    found = provenance(store, "surrogates", store.version("surrogates"))
    assert {row["table"] for row in found["chain"]} >= {"surrogates", "subset_outcomes", "corpus_shards"}
    assert not found["missing"] and found["corpus_content_sha1"]
    rows = rebuild_lineage_index(store)
    index = store.read(LINEAGE_TABLE)
    assert index.height == rows and rows >= 10
    row = index.filter(pl.col("table") == "surrogates").row(0, named=True)
    assert json.loads(row["reads"]) == lineage_of(store, "surrogates", row["version"])["reads"]

"""Stage behaviours on real tables built by the library stages (no Dagster), on a corpus with
exact duplicates: dedup of every curated selection, the mixture's concavity report, and
validation refusing outcomes retrained with different recipes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from grasp_pipeline import stages
from grasp_pipeline.corpus import load_documents
from grasp_pipeline.infra.storage import DeltaStore

from .conftest import build_tables_until, copy_root, tiny_params


def write_duplicated_corpus(path: Path, copies: int = 8) -> Path:
    """Writes a JSONL corpus whose pool documents each appear `copies` times under other ids:
    short documents (about 3 examples each), so the pool sample is full of exact duplicates. The
    last four documents of each domain appear once: they become its held-out task documents
    (the split refuses dev documents that copy test ones, and keeps copies of either out of the pool)."""
    documents, _ = load_documents(None)
    rows = []
    for domain in ("english_literature", "python_source", "german_literature"):
        text = documents.filter((pl.col("domain") == domain) & (pl.col("dirt") == "clean"))["text"][0]
        rows += [{"id": f"{domain}-{i}-{c}", "domain": domain, "text": text[300 * i:300 * i + 300]}
                 for i in range(10) for c in range(copies if i < 6 else 1)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """(storage root, params): every table up to selection_validation on the duplicated corpus."""
    base = tmp_path_factory.mktemp("duplicated")
    params = tiny_params(corpus={"corpus_path": str(write_duplicated_corpus(base / "corpus.jsonl"))})
    build_tables_until(base / "storage", "selection_validation", params)
    return base / "storage", params


def selection_content(store: DeltaStore) -> pl.DataFrame:
    pool = store.read("corpus_shards").select("example_id", "content_sha1")
    return store.read("curated_selections").join(pool, on="example_id", how="left")


def test_the_duplicated_corpus_puts_duplicates_in_the_pool(duplicated):
    pool = DeltaStore(str(duplicated[0])).read("corpus_shards")
    assert pool["content_sha1"].n_unique() < pool.height / 2


def test_every_curated_selection_holds_each_content_once_under_dedup(duplicated):
    selections = selection_content(DeltaStore(str(duplicated[0])))
    for method in ("grasp", "grad_dot", "datamodel"):
        rows = selections.filter(pl.col("method") == method)
        assert rows.height == rows["budget"][0] > 0, method
        assert rows["content_sha1"].n_unique() == rows.height, method


def test_without_dedup_the_baselines_take_duplicates(duplicated, tmp_path):
    root, params = duplicated
    store = copy_root(root, tmp_path / "root")
    stages.run_curated_selection(store, replace(params.selection, dedup_content=False))
    selections = selection_content(store)
    # grad_dot scores by sketch alone, so copies tie and are taken together; datamodel fits one weight per
    # example id (copies sit in different fit subsets), so whether it takes a copy is the corpus's luck
    rows = selections.filter(pl.col("method") == "grad_dot")
    assert rows["content_sha1"].n_unique() < rows.height  # the same pool, no content rule


def test_the_mixture_stage_reports_whether_its_objective_is_concave(duplicated, tmp_path):
    root, params = duplicated
    store = copy_root(root, tmp_path / "root")
    result = stages.run_mixture_weights(store, params.mixture)
    curvature = result.metrics["mixture_max_curvature"]
    assert np.isfinite(curvature)
    assert result.metrics["mixture_concave"] == (1.0 if curvature <= 0 else 0.0)
    weights = store.read("mixture_weights").group_by("method").agg(pl.col("weight").sum())
    np.testing.assert_allclose(weights["weight"].to_numpy(), 1.0, atol=1e-12)


def test_validation_refuses_outcomes_retrained_with_different_recipes_naming_the_batches(duplicated, tmp_path):
    root, params = duplicated
    store = copy_root(root, tmp_path / "root")
    workload = params.workload.build()
    batches = sorted(store.read("subset_outcomes")["batch"].unique().to_list())
    assert len(batches) >= 2
    stages.run_subset_outcomes(store, workload, replace(params.retrain, steps=params.retrain.steps + 2),
                               batches=[batches[0]])
    version, before = store.version("selection_validation"), store.read("selection_validation")
    with pytest.raises(ValueError, match="disagree on the retraining recipe") as raised:
        stages.run_selection_validation(store, workload, params.validation)
    message = str(raised.value)
    assert all(b in message for b in batches)
    assert f"steps={params.retrain.steps + 2}" in message and f"steps={params.retrain.steps}" in message
    assert store.version("selection_validation") == version
    assert_frame_equal(store.read("selection_validation"), before)


# ---------------------------------------------------------------- the stage record


def test_each_stage_runs_as_run_name_from_its_module_named_like_it():
    for stage in stages.STAGES:
        if stage.run is None:  # trainer_export writes files: grasp_pipeline.ops.export, not a stages/ module
            assert stage.name == "trainer_export" and not stage.tables
            continue
        assert (stage.run.__module__, stage.run.__name__) == (f"grasp_pipeline.stages.{stage.name}",
                                                              f"run_{stage.name}")
        assert getattr(stages, f"run_{stage.name}") is stage.run


def test_stages_are_in_dependency_order_and_each_table_has_one_writer():
    written = []
    for stage in stages.STAGES:
        assert set(stage.reads) <= set(written), (stage.name, sorted(set(stage.reads) - set(written)))
        assert not set(stage.tables) & set(written), stage.name
        written += stage.tables


def test_the_whole_graph_is_every_stage_that_writes_tables_and_runs_when_its_inputs_change(tmp_path):
    params = tiny_params()
    plan = stages.stage_plan(DeltaStore(str(tmp_path)), params, params.workload.build())
    assert [name for name, _ in plan] == [s.name for s in stages.STAGES if s.tables and not s.on_demand]
    assert {"mixture_update", "trainer_export"}.isdisjoint(name for name, _ in plan)

"""A failed run explains itself and leaves the earlier table versions intact."""

from __future__ import annotations

import dagster as dg
import polars as pl
from polars.testing import assert_frame_equal

from grasp_pipeline.storage import DeltaStore

from .conftest import materialize_prepare, tiny_params, write_user_corpus


def _failure_messages(result) -> str:
    from assets.cli import error_chain

    return "\n".join(error_chain(e.event_specific_data.error) for e in result.all_events
                     if e.is_step_failure and e.event_specific_data is not None)


def test_bad_corpus_fails_the_run_naming_the_file_and_keeps_the_previous_tables(tmp_path):
    root = tmp_path / "storage"
    good = write_user_corpus(tmp_path / "good" / "corpus.jsonl")
    params = tiny_params(corpus={"corpus_path": str(good)})
    with dg.instance_for_test() as instance:
        assert materialize_prepare(root, params, instance, selection=["corpus_shards"]).success
        store = DeltaStore(str(root))
        before, version = store.read("corpus_shards"), store.version("corpus_shards")

        bad = tmp_path / "bad" / "corpus.jsonl"
        bad.parent.mkdir()
        bad.write_text('{"text": "hello", "domain": "news"}\n{"text": "no domain here"}\n')
        result = materialize_prepare(root, tiny_params(corpus={"corpus_path": str(bad)}), instance,
                                      selection=["corpus_shards"], raise_on_error=False)
    assert not result.success
    message = _failure_messages(result)
    assert "corpus.jsonl" in message and "domain" in message
    assert store.version("corpus_shards") == version
    assert_frame_equal(store.read("corpus_shards"), before)


def test_a_domain_too_small_for_its_task_set_is_named(tmp_path):
    corpus = write_user_corpus(tmp_path / "corpus.jsonl", docs_per_domain=1)
    params = tiny_params(corpus={"corpus_path": str(corpus), "task_examples_per_domain": 500})
    with dg.instance_for_test() as instance:
        result = materialize_prepare(tmp_path / "storage", params, instance, selection=["corpus_shards"],
                                      raise_on_error=False)
    assert not result.success
    message = _failure_messages(result)
    assert any(f"domain '{d}'" in message for d in ("news", "code", "poetry"))
    assert "task_examples_per_domain" in message


def test_incomplete_outcomes_stop_the_surrogate_with_an_explanation(pipeline_run, tmp_path):
    # copy the finished tables, drop one subset's outcomes, and refit
    from grasp_pipeline import stages

    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "subset_plan", "subset_outcomes"):
        store.write(table, source.read(table))
    outcomes = store.read("subset_outcomes")
    store.write("subset_outcomes", outcomes.filter(pl.col("subset_id") != 3))
    try:
        stages.fit_surrogate_tables(store, tiny_params().surrogate)
    except ValueError as error:
        assert "subset 3" in str(error) and "subset_outcomes" in str(error)
    else:
        raise AssertionError("fitting on incomplete outcomes must fail")

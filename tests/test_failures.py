"""A failed run explains itself and leaves the earlier table versions intact."""

from __future__ import annotations

import json
from dataclasses import replace

import dagster as dg
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from grasp_pipeline.infra.storage import DeltaStore

from .conftest import build_tables_until, materialize_prepare, tiny_params, write_user_corpus


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
        stages.run_surrogates(store, tiny_params().surrogate)
    except ValueError as error:
        assert "subset 3" in str(error) and "subset_outcomes" in str(error)
    else:
        raise AssertionError("fitting on incomplete outcomes must fail")


def test_sketch_steps_beyond_the_warm_up_are_refused_before_anything_is_written(tmp_path):
    from grasp_pipeline import stages

    store = build_tables_until(tmp_path, "corpus_shards")
    with pytest.raises(ValueError, match=r"reference.sketch_steps = \[4, 12\]: must be distinct steps in 0..8"):
        tiny_params(reference={"steps": 8, "sketch_steps": [4, 12]})  # refused when the settings are read
    bad = replace(tiny_params().reference, steps=8, sketch_steps=(4, 12))  # and by the stage, if built by hand
    with pytest.raises(ValueError, match=r"reference.sketch_steps \[4, 12\] must be distinct steps in 0..8"):
        stages.run_reference_model(store, tiny_params().workload.build(), bad)
    assert not store.exists("reference_models")


def test_pool_sketches_hold_one_block_per_reference_checkpoint(pipeline_run):
    """The stored sketch is [P g(θ₄); P g(θ₈)]: its first block is the step-4 checkpoint's own sketch."""
    from grasp_pipeline import stages
    from grasp_pipeline.sketching import GradientSketcher

    store = DeltaStore(str(pipeline_run[0]))
    params = tiny_params()
    workload = params.workload.build()
    version, checkpoints = stages.load_reference_checkpoints(store, workload)
    assert [step for step, _ in checkpoints] == [4, 8]
    assert store.read("reference_models")["sketch_steps"].to_list() == [[4, 8]]
    sketches = stages.pool_sketches(store)
    config = json.loads(sketches["sketch_config"][0])
    assert config["checkpoint_steps"] == [4, 8] and config["dim"] == 2 * params.sketch.k
    assert config["model_version"] == version
    head = sketches.head(5)
    first = GradientSketcher.from_config(workload, checkpoints[0][1], config).sketch_examples(
        workload.encode(stages.read_pool(store).head(5)["text"].to_list())).sketch
    stored = np.asarray(head["sketch"].to_list(), dtype=np.float32)
    np.testing.assert_allclose(stored[:, :params.sketch.k], first, atol=1e-5, rtol=0)
    assert np.asarray(store.read("task_sketches")["sketch"].to_list()).shape[1] == 2 * params.sketch.k

"""`grasp run` end to end as a user runs it: a subprocess, a user corpus, a persistent instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from grasp_pipeline.storage import DeltaStore

from .conftest import write_user_corpus


def test_grasp_run_on_a_user_corpus_prints_the_summary_and_records_the_run(tmp_path, tiny_config_file):
    corpus = write_user_corpus(tmp_path / "user" / "corpus.jsonl")
    home = tmp_path / "dagster_home"
    grasp = Path(sys.executable).with_name("grasp")
    completed = subprocess.run(
        [str(grasp), "run", "--profile", "smoke", "--corpus", str(corpus), "--config", str(tiny_config_file),
         "--root", str(tmp_path / "storage")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(home)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    for expected in ("Holdout fidelity", "grasp", "grad_dot", "datamodel", "random-0", "Wall seconds per stage"):
        assert expected in completed.stdout
    assert set(DeltaStore(str(tmp_path / "storage")).read("corpus_shards")["domain"]) == {"news", "code", "poetry"}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["grasp_fit_and_curate", "grasp_prepare", "grasp_retrain",
                                                   "grasp_sketch"]
        assert all(r.is_success for r in runs)


def test_grasp_run_with_an_unknown_config_field_fails_naming_it(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"retrain": {"stepz": 3}}')
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("grasp")), "run", "--config", str(bad), "--root", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert completed.returncode != 0
    assert "stepz" in completed.stderr


def test_grasp_select_and_mixture_recurate_from_existing_tables(pipeline_run, tmp_path):
    import polars as pl

    from assets.cli import main

    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    # the peer mixers of `grasp mixture` fit on the plan's fit subsets and their outcomes too
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "surrogates", "subset_plan",
                  "subset_outcomes"):
        store.write(table, source.read(table))
    tasks = sorted(store.read("task_sketches")["task"])
    assert main(["select", "--root", store.root, "--budget-fraction", "0.1", "--task-weight", f"{tasks[0]}=3"]) == 0
    selections = store.read("curated_selections")
    pool = store.read("corpus_shards").height
    assert set(selections.filter(pl.col("method") == "grasp_global")["budget"]) == {max(1, round(0.1 * pool))}
    assert main(["mixture", "--root", store.root, "--budget-fraction", "0.1"]) == 0
    sums = store.read("mixture_weights").group_by("method").agg(pl.col("weight").sum())
    assert all(abs(w - 1) < 1e-9 for w in sums["weight"])
    lineage = store.read("lineage")
    assert set(lineage["asset"]) == {"curated_selection (grasp select)", "mixture_weights (grasp mixture)"}


def test_grasp_select_with_an_unknown_task_weight_fails_naming_it(pipeline_run, tmp_path, capsys):
    from assets.cli import main

    source = DeltaStore(str(pipeline_run[0]))
    store = DeltaStore(str(tmp_path / "storage"))
    # the peer mixers of `grasp mixture` fit on the plan's fit subsets and their outcomes too
    for table in ("corpus_shards", "gradient_sketches", "task_sketches", "surrogates", "subset_plan",
                  "subset_outcomes"):
        store.write(table, source.read(table))
    assert main(["select", "--root", store.root, "--task-weight", "no_such_task=2"]) == 2
    assert "no_such_task" in capsys.readouterr().err

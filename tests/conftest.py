"""Shared fixtures: a tiny pipeline configuration, user corpora, storage roots (local or S3, a copy of a
built one), and one materialised graph."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from grasp_pipeline.config import PipelineParams, with_overrides

# localhost servers (moto S3, Redis, MLflow) as session fixtures: tests/services.py
pytest_plugins = ["tests.services"]

# Small enough that the whole graph runs in seconds, big enough that every stage is real.
TINY = {
    "corpus": {"task_examples_per_domain": 8, "pool_examples_per_domain": 24, "shard_size": 16},
    "reference": {"warmup_examples": 64, "steps": 8, "batch_size": 16, "sketch_steps": [4, 8]},
    "sketch": {"k": 32, "chunk_size": 32},
    "plan": {"uniform_fraction": 0.2, "uniform_fit": 8, "uniform_holdout": 4, "dirichlet_fit": 8,
             "dirichlet_holdout": 4, "dirichlet_min_fraction": 0.05, "dirichlet_max_fraction": 0.4,
             "stratified_fit": 4, "stratified_holdout": 4, "subsets_per_batch": 8},
    # workers 1 everywhere: the tiny stages train in their own process (a worker pool's start costs more
    # than these models; tests/test_retrain_cost.py covers the worker processes)
    "retrain": {"steps": 4, "batch_size": 8, "models_per_batch": 8, "repeats": 2, "workers": 1},
    "surrogate": {"cv_folds": 3, "grasp_size_terms": ["log"], "grasp_normalisations": ["none", "mean"],
                  "grasp_geometries": ["identity", "diagonal"], "datamodel_ridges": [1.0, 10.0],
                  "grasp_ridges": [0.1], "fidelity_fit_budgets": [8], "workers": 1},
    "selection": {"budget_fraction": 0.2, "random_seeds": [0, 1]},
    "mixture": {"budget_fraction": 0.2},
    "loop": {"budget_fraction": 0.2, "random_seeds": [900, 901], "bootstrap": 3, "trust_radii": [1e-3, 1e-1],
             "mixture_steps": [0.0, 0.5], "workers": 1},
    "validation": {"repeats": 1, "workers": 1},
    "test": {"workers": 1},
    "target": {"workers": 1},
    "mixture_update": {"workers": 1},
}


def tiny_params(**section_overrides) -> PipelineParams:
    params = with_overrides(PipelineParams(), TINY)
    return with_overrides(params, section_overrides) if section_overrides else params


@pytest.fixture
def tiny_config_file(tmp_path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def write_user_corpus(path: Path, domains=("news", "code", "poetry"), docs_per_domain=3,
                      source_domains=("english_literature", "python_source", "german_literature")) -> Path:
    """Writes a small JSONL corpus under new domain names, made from real embedded text."""
    from grasp_pipeline.corpus import load_documents

    documents, _ = load_documents(None)
    rows = []
    for name, source in zip(domains, source_domains):
        # clean documents only: the embedded corpus's dirt documents are one example each
        docs = documents.filter((pl.col("domain") == source) & (pl.col("dirt") == "clean")).head(docs_per_domain)
        rows += [{"id": f"{name}-{i}", "domain": name, "text": text} for i, text in enumerate(docs["text"])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def build_tables_until(root, last: str = "subset_outcomes", params: PipelineParams | None = None):
    """Runs the library stages (no Dagster) in dependency order up to and including `last`."""
    from grasp_pipeline import stages
    from grasp_pipeline.infra.storage import DeltaStore

    params = params or tiny_params()
    store = DeltaStore(str(root))
    plan = stages.stage_plan(store, params, params.workload.build())
    names = [name for name, _ in plan]
    for _, run in plan[:names.index(last) + 1]:
        run()
    return store


@pytest.fixture(params=["local", "s3"])
def any_root(request, tmp_path) -> str:
    """A storage root on the local disk, or in a fresh bucket of the S3-compatible server."""
    return str(tmp_path / "root") if request.param == "local" else request.getfixturevalue("s3_root")


def copy_root(source, destination: Path):
    """A writable copy (a DeltaStore) at `destination` of a built local root, its tables and checkpoint
    files, so a test may change tables that a module- or session-scoped fixture built once."""
    from grasp_pipeline.infra.storage import DeltaStore

    shutil.copytree(source, destination)
    return DeltaStore(str(destination))


def materialize_prepare(root: Path, params: PipelineParams, instance: dg.DagsterInstance,
                        selection: list[str], raise_on_error: bool = True) -> dg.ExecuteInJobResult:
    """Materialises the stages `selection` (of the grasp_prepare job: every table they write)
    in-process with `params`."""
    from assets.catalog import asset_keys
    from assets.definitions import defs
    from assets.run_config import run_config_for

    job = defs.resolve_job_def("grasp_prepare").get_subset(asset_selection=set(asset_keys(selection)))
    run_config = run_config_for(params, str(root))
    run_config["ops"] = {k: v for k, v in run_config["ops"].items() if k in selection}
    return job.execute_in_process(run_config=run_config, instance=instance, raise_on_error=raise_on_error)


def materialize_everything(root: Path, params: PipelineParams, instance: dg.DagsterInstance):
    """The whole graph as `grasp run` materialises it; returns the runs' results."""
    from assets.definitions import defs
    from assets.jobs import materialize_everything as run_all
    from assets.run_config import run_config_for

    return run_all(defs, instance, run_config_for(params, str(root)))


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """One whole-graph materialisation on the tiny config, shared by read-only tests."""
    root = tmp_path_factory.mktemp("grasp") / "storage"
    home = tmp_path_factory.mktemp("dagster_home")
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        results = materialize_everything(root, tiny_params(), instance)
        yield root, results, instance


@pytest.fixture(autouse=True, scope="session")
def _quiet_threads():
    # tests run many tiny models: more threads than cores only adds contention
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


@contextmanager
def spawn_pool(processes: int):
    """A spawn-context process pool that ends by close() + join(): its workers exit on the pool's
    sentinels. Pool's own `with` ends by terminate(), a SIGTERM to each worker; Dagster maps SIGTERM to
    SIGINT's handler, so in a test process started where SIGINT is ignored (a background job), the
    workers inherit an ignored SIGTERM and terminate() waits for them forever."""
    pool = multiprocessing.get_context("spawn").Pool(processes)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()

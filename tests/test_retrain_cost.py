"""Retraining throughput paths give the outcomes of the plain in-process loop: worker processes
exactly, torch.compile within float32 tolerance (atol 1e-5, as tests/test_retrain.py)."""

from __future__ import annotations

import numpy as np
import pytest

from grasp_pipeline.config import RetrainParams
from grasp_pipeline.training.retrain import Recipe, TrainJob, retrain_subsets, train_jobs
from grasp_pipeline.workloads import make_workload

ATOL = 1e-5
TASKS = ["t0", "t1"]


@pytest.fixture(scope="module")
def setup():
    workload = make_workload("byte_mlp", context=2, embed_dim=4, hidden=8, example_bytes=16)
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "def f(x):", "return", "der", "und", "ß"]
    pool = workload.encode([" ".join(rng.choice(words, size=rng.integers(1, 6))) for _ in range(60)])
    subsets = [(200 + j, np.sort(rng.choice(60, size=int(rng.integers(5, 30)), replace=False))) for j in range(6)]
    task_of_row = np.arange(10) % 2
    recipe = Recipe.from_params(RetrainParams(), steps=6, batch_size=4, lr=1e-2)
    return workload, recipe, pool, subsets, pool[:10], task_of_row


def outcome_table(outcomes) -> dict:
    return {(o.subset_id, o.repeat): o.task_loss for o in outcomes}


def run(setup, **settings) -> dict:
    workload, recipe, pool, subsets, task_inputs, task_of_row = setup
    return outcome_table(retrain_subsets(workload, recipe, pool, subsets, task_inputs, task_of_row, TASKS,
                                         repeats=2, **settings))


def test_worker_processes_give_the_outcomes_of_one_process(setup):
    alone = run(setup, models_per_batch=2, workers=1)
    spread = run(setup, models_per_batch=2, workers=2)
    assert spread.keys() == alone.keys()
    for key in alone:
        np.testing.assert_allclose(spread[key], alone[key], atol=ATOL, rtol=0)


def test_the_group_size_does_not_change_the_outcomes(setup):
    one_by_one = run(setup, models_per_batch=1, workers=1)
    stacked = run(setup, models_per_batch=4, workers=2)
    for key in one_by_one:
        np.testing.assert_allclose(stacked[key], one_by_one[key], atol=ATOL, rtol=0)


def test_compiled_steps_in_forked_workers_match_eager_training(setup):
    eager = run(setup, models_per_batch=3, workers=1)
    compiled = run(setup, models_per_batch=3, workers=2, compile=True)
    assert compiled.keys() == eager.keys()
    for key in eager:
        np.testing.assert_allclose(compiled[key], eager[key], atol=ATOL, rtol=0)


def test_worker_processes_report_each_group_as_it_finishes(setup):
    from grasp_pipeline.infra import progress

    events = []
    with progress.reporting(events.append):
        run(setup, models_per_batch=2, workers=2)
    jobs = len(setup[3]) * 2  # subsets × repeats
    done = [e.done for e in events if e.task == "retraining" and not e.finished]
    assert done == list(range(0, jobs + 1, 2))  # the start, then one event per group of 2


def test_jobs_with_their_own_initialisation_train_as_that_recipe_would(setup):
    from dataclasses import replace


    workload, recipe, pool, subsets, task_inputs, task_of_row = setup
    jobs = [TrainJob(rows, (7, subset_id), init_seed=11 + j % 2) for j, (subset_id, rows) in enumerate(subsets)]
    mixed, _ = train_jobs(workload, recipe, pool, jobs, task_inputs, task_of_row, TASKS, models_per_batch=2,
                          workers=2)
    for j, job in enumerate(jobs):
        alone = retrain_subsets(workload, replace(recipe, init_seed=job.init_seed, data_order_seed=7),
                                pool, [subsets[j]], task_inputs, task_of_row, TASKS, workers=1)
        np.testing.assert_allclose(mixed[j], alone[0].task_loss, atol=ATOL, rtol=0)
    other_init, _ = train_jobs(workload, recipe, pool, [replace(jobs[0], init_seed=12)], task_inputs, task_of_row,
                               TASKS)
    assert not np.allclose(other_init[0], mixed[0])  # the initialisation is honoured, not ignored

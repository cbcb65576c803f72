"""Progress everywhere: the library's stages report their loops through callbacks; the CLI, the
Dagster run log and MLflow each get them in their own form."""

from __future__ import annotations

import io

import polars as pl
import pytest

from assets.cli.console import ConsoleProgress
from assets.reporting import DagsterLog
from grasp_pipeline.infra import progress
from grasp_pipeline.infra.progress import ProgressEvent
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.stages.registry import STAGES, stage_ordinal

from .conftest import tiny_params


def test_callbacks_nest_and_tasks_know_their_enclosing_tasks():
    outer_events, inner_events = [], []
    with progress.reporting(outer_events.append):
        with progress.reporting(inner_events.append):
            with progress.task("stage", unit="stage"):
                with progress.task("shards", total=2, unit="shard") as shards:
                    shards.advance(loss=1.5)
                    shards.advance()
        with progress.task("after", total=1) as after:
            after.advance()
    assert [e.task for e in inner_events] == ["stage", "shards", "shards", "shards", "shards", "stage"]
    assert len(outer_events) == len(inner_events) + 3  # the outer callback also hears the later task
    shard_events = [e for e in inner_events if e.task == "shards"]
    assert [(e.done, e.finished) for e in shard_events] == [(0, False), (1, False), (2, False), (2, True)]
    assert shard_events[1].path == ("stage",) and shard_events[1].metrics == {"loss": 1.5}
    assert shard_events[1].describe().startswith("stage › shards: 1/2 shard (50%)")
    assert not progress.active()
    with progress.task("unheard", total=3) as unheard:  # no callback: nothing to do, nothing raised
        unheard.advance()


@pytest.fixture(scope="module")
def stage_events(tmp_path_factory):
    """Every progress event of the library stages run in order on the tiny config (no Dagster)."""
    from grasp_pipeline import stages

    params = tiny_params()
    store = DeltaStore(str(tmp_path_factory.mktemp("progress") / "storage"))
    events: list[ProgressEvent] = []
    with progress.reporting(events.append):
        for name, run in stages.stage_plan(store, params, params.workload.build()):
            with progress.task(name, unit="stage"):  # as assets/materialize.py runs a stage
                run()
    return store, params, events


def _finished(events, task: str) -> list[ProgressEvent]:
    return [e for e in events if e.task == task and e.finished]


def test_the_warm_up_reports_every_step_with_its_training_loss(stage_events):
    _, params, events = stage_events
    steps = [e for e in events if e.task == "warm-up" and not e.finished and e.done > 0]
    assert [e.done for e in steps] == list(range(1, params.reference.steps + 1))
    assert all(e.metrics["train_loss"] > 0 for e in steps)
    assert steps[0].metrics["train_loss"] > steps[-1].metrics["train_loss"]  # it trains


def test_every_stage_reports_its_shards_batches_candidates_and_rounds(stage_events):
    store, params, events = stage_events
    (sketching,) = _finished(events, "sketching")
    assert sketching.done == sketching.total == store.read("corpus_shards")["shard"].n_unique()
    # fit subsets train `repeats` times, holdout subsets `holdout_repeats` times (one task each)
    plan = store.read("subset_plan")
    holdout = plan.filter(plan["role"] == "holdout").height
    repeats = params.retrain.repeats
    (fit,), (held,) = _finished(events, "retraining fit subsets"), _finished(events, "retraining holdout subsets")
    assert (fit.done, held.done) == ((plan.height - holdout) * repeats,
                                     holdout * max(repeats, params.retrain.holdout_repeats))
    loops = {("subset_outcomes", "retraining fit subsets"), ("subset_outcomes", "retraining holdout subsets")}
    trained_steps = [e for e in events if e.path in loops and e.unit == "step" and e.finished]
    assert trained_steps and all(e.done == params.retrain.steps for e in trained_steps)
    scored = [e for e in events if e.path in loops and e.task == "evaluating" and e.finished]
    dev_examples = store.read("task_sets").filter(pl.col("split") == "dev").height  # retraining scores dev only
    assert len(scored) == len(trained_steps) and all(e.done == dev_examples for e in scored)
    for method in ("grasp", "grad_dot", "trak", "datamodel", "size"):
        assert _finished(events, f"{method} candidates"), method
    (rounds,) = _finished(events, "protection")
    assert 1 <= rounds.done <= params.selection.protect_rounds + 1
    assert _finished(events, "sketching tasks")[0].done == store.read("task_sets")["task"].n_unique()
    validated = store.read("selection_validation").select("selection_id", "method").unique()
    mixtures = validated.filter(pl.col("method").str.starts_with("mixture-")).height
    references = len(params.validation.random_seeds)  # the dev verdict's random selections are retrained too
    assert _finished(events, "retraining selections")[0].done == (
        (validated.height - mixtures + references) * params.validation.repeats
        + mixtures * params.validation.mixture_samples)


def test_the_console_prints_stages_loop_ends_and_at_most_one_progress_line_per_interval():
    now = [0.0]
    out = io.StringIO()
    console = ConsoleProgress(out, interval=5.0, bars=False, clock=lambda: now[0])
    with progress.reporting(console):
        with progress.task("gradient_sketches", unit="stage"):
            with progress.task("sketching", total=100, unit="shard") as shards:
                for _ in range(100):
                    now[0] += 0.5  # 50 s of work, a shard every half second
                    shards.advance()
    lines = out.getvalue().splitlines()
    assert lines[0] == "▶ gradient_sketches" and lines[-1].startswith("✓ gradient_sketches ")
    assert lines[-2].startswith("  gradient_sketches › sketching: done, 100/100 shard")
    progress_lines = [line for line in lines if "/100 shard (" in line]
    assert 9 <= len(progress_lines) <= 11  # one per 5 s of 50 s, not one per shard


def test_the_console_draws_bars_on_a_terminal():
    out = io.StringIO()
    with progress.reporting(ConsoleProgress(out, bars=True)):
        with progress.task("reference_model", unit="stage"):
            with progress.task("warm-up", total=3, unit="step") as steps:
                for loss in (3.0, 2.5, 2.0):
                    steps.advance(train_loss=loss)
    text = out.getvalue()
    assert "warm-up" in text and "3/3" in text and "train_loss=2" in text and "✓ reference_model" in text


def test_a_dagster_run_log_gets_rate_limited_progress_lines(pipeline_run):
    _, results, instance = pipeline_run
    retrain = next(r for r in results if r.job_def.name == "grasp_retrain")
    messages = [e.user_message for e in instance.all_logs(retrain.run_id) if e.dagster_event is None]
    assert any(m.startswith("subset_outcomes › retraining fit subsets: 0/") for m in messages), messages  # starts
    assert any(m.startswith("subset_outcomes › retraining fit subsets: done") for m in messages)  # ... and ends
    params = tiny_params()
    subsets = DeltaStore(str(pipeline_run[0])).read("subset_plan").height * params.retrain.repeats
    step_events = params.retrain.steps * -(-subsets // params.retrain.models_per_batch)
    step_lines = [m for m in messages if " models: " in m]
    assert len(step_lines) < step_events  # per-step events are rate-limited, not one line each


def test_the_dagster_log_writes_outline_lines_always_and_progress_lines_at_most_once_per_interval():
    import logging

    records = []
    logger = logging.getLogger("grasp.test.progress")
    logger.setLevel(logging.INFO)
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    now = [0.0]
    try:
        with progress.reporting(DagsterLog(logger, interval=5.0, clock=lambda: now[0])):
            with progress.task("subset_outcomes", unit="stage"):
                with progress.task("retraining", total=10, unit="subset") as subsets:
                    for _ in range(10):
                        with progress.task("16 models", total=40, unit="step") as steps:
                            for _ in range(40):
                                now[0] += 0.05  # 20 s of steps in all
                                steps.advance()
                        subsets.advance()
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert lines[0].startswith("subset_outcomes: 0") and lines[-1].startswith("subset_outcomes: done")
    assert lines[-2].startswith("subset_outcomes › retraining: done, 10/10 subset")
    assert len(lines) <= 4 + 20 / 5 + 1  # the outline's four lines, and one per 5 s of 20 s


def test_log_lines_of_inner_loops_carry_the_shard_and_the_round_they_belong_to(stage_events):
    store, params, events = stage_events
    lines = [e.describe() for e in events]  # a log written at every event
    shards = set(store.read("corpus_shards")["shard"].unique().to_list())
    sketched = {line.split(" › ")[1] for line in lines  # the stage, its loop at a shard, then the inner loop
                if line.startswith("gradient_sketches › shard ") and " › examples: " in line}
    assert sketched == {f"shard {s}" for s in shards}
    rounds = {line.split(" › ")[1] for line in lines if line.startswith("curation_loop › round ")
              and " › retraining candidates: " in line}
    assert rounds == {f"round {r}" for r in range(params.loop.rounds)}


def test_each_outer_loop_of_a_stage_ends_with_one_done_line_of_its_own(stage_events):
    _, _, events = stage_events
    # the loops a log's outline shows: each stage's own loops
    ends = [e.describe().split(": done")[0] for e in events if e.finished and e.depth == 1]
    assert len(ends) == len(set(ends)), sorted(end for end in ends if ends.count(end) > 1)
    assert {"subset_outcomes › retraining fit subsets", "subset_outcomes › retraining holdout subsets"} <= set(ends)


def test_a_loop_line_estimates_the_time_left_from_its_rate_so_far():
    event = ProgressEvent("sketching", "shard", done=10, total=40, seconds=6.0, path=("gradient_sketches",))
    assert event.remaining == pytest.approx(6.0 / 10 * 30)
    assert event.describe() == "gradient_sketches › sketching: 10/40 shard (25%), 6.0 s, ~18 s left"
    assert ProgressEvent("sketching", "shard", 40, 40, 24.0, finished=True).remaining is None
    assert ProgressEvent("reading", "file", 3, None, 2.0).remaining is None  # no total, no estimate


def test_a_stage_header_says_which_stage_of_how_many_it_is():
    out = io.StringIO()
    names = [s.name for s in STAGES if not s.on_demand]
    with progress.reporting(ConsoleProgress(out, bars=False)):
        with progress.task("gradient_sketches", unit="stage", ordinal=stage_ordinal("gradient_sketches")):
            pass
    lines = out.getvalue().splitlines()
    position = f"(stage {names.index('gradient_sketches') + 1} of {len(names)})"
    assert lines[0] == f"▶ gradient_sketches {position}" and lines[-1].startswith(f"✓ gradient_sketches {position} ")
    assert stage_ordinal("mixture_update") is None  # on demand: not one of a run's stages

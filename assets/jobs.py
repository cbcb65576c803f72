"""Every job of the code location, with its tags, and the four-run materialisation `grasp run` does.

`grasp_prepare` (corpus, reference model, subset plan) registers the corpus shards and the
retraining batches as dynamic partitions; `grasp_sketch` materialises gradient_sketches for
a range of shards in one run (or one shard, for a rerun); `grasp_retrain` does the same for
subset_outcomes over retraining batches; `grasp_fit_and_curate` sketches the tasks, fits
surrogates, curates, validates, mixes and exports for trainers. Jobs that train torch models
carry the run tag grasp/torch=true, which deploy/dagster.yaml limits to one queued run at a time.

Jobs are lists of stages (ops, whose run config they carry); each job selects the tables
those stages write (assets/catalog.py). `grasp_maintain` (assets/maintenance.py) is an op job.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from grasp_pipeline.stages import STAGES

from .catalog import asset_keys
from .partitions import full_range_tags

TORCH_TAG = {"grasp/torch": "true"}

# the stages before the surrogate fit, each job a step of `grasp run` (PIPELINE) with its own partitions
_PREPARE, _SKETCH, _RETRAIN = ["corpus_shards", "reference_model", "subset_plan"], ["gradient_sketches"], \
    ["subset_outcomes"]
# job -> the stages (ops) it runs; a job's run config carries only theirs, it selects their tables
JOB_ASSETS: dict[str, list[str]] = {
    "grasp_prepare": _PREPARE,
    "grasp_sketch": _SKETCH,
    "grasp_retrain": _RETRAIN,
    # every other stage that runs when its inputs change, in dependency order
    "grasp_fit_and_curate": [s.name for s in STAGES if not s.on_demand and s.name not in _PREPARE + _SKETCH + _RETRAIN],
    "grasp_reoptimise_mixture": ["mixture_weights"],
    # a changed domain set (the stages run on demand): sketch only new and revised domains, re-optimise,
    # retrain nothing
    "grasp_update_mixture": [s.name for s in STAGES if s.on_demand],
    # no retraining: the outcomes do not depend on θ₀
    "grasp_refresh_sketches_and_surrogate": ["reference_model", "gradient_sketches", "task_sketches", "surrogates"],
    "grasp_export": ["trainer_export"],
}
JOB_NAMES = list(JOB_ASSETS)
# which dynamic partitions each partitioned job runs over (all of them, as one range, by default)
JOB_PARTITIONS = {"grasp_sketch": "corpus_shards", "grasp_retrain": "retraining_batches"}
# `grasp run`: these jobs in this order
PIPELINE = ["grasp_prepare", "grasp_sketch", "grasp_retrain", "grasp_fit_and_curate"]

_DESCRIPTIONS = {
    "grasp_prepare": "Corpus, reference model and the subset plan; registers the shard and batch partitions.",
    "grasp_sketch": "Per-example gradient sketches of the pool (partitioned by shard).",
    "grasp_retrain": "Retrain the recipe on planned subsets (partitioned by batch).",
    "grasp_fit_and_curate": "Task sketches, surrogates, the closed loop, curated selection and its validation, "
                            "mixture, the held-out curation test, the target check and the trainer export.",
    "grasp_reoptimise_mixture": "Re-optimise the domain mixture from the current surrogate.",
    "grasp_update_mixture": "The mixture for the deployment's changed corpus (new or revised domains) from the stored "
                            "surrogate and sketches: sketches only what changed, refits nothing (a few dev "
                            "retrainings pick between the optimum and safer candidates).",
    "grasp_refresh_sketches_and_surrogate": (
        "Reference model, gradient and task sketches, surrogates (after a sketch or model setting changed; the "
        "retraining outcomes do not depend on them). Launch it over all corpus_shards partitions (one run). "
        "Then run grasp_fit_and_curate or grasp_reoptimise_mixture for what they mark stale."),
    "grasp_export": "Write every mixture's domain weights (JSON/YAML, Hugging Face and Megatron forms) and every "
                    "selection's byte-range manifest (Parquet) for trainers.",
}
_TRAINS_MODELS = {"grasp_prepare", "grasp_sketch", "grasp_retrain", "grasp_fit_and_curate",
                  "grasp_refresh_sketches_and_surrogate", "grasp_update_mixture"}

jobs = {name: dg.define_asset_job(name, selection=dg.AssetSelection.assets(*asset_keys(stages)),
                                  description=_DESCRIPTIONS[name], tags=TORCH_TAG if name in _TRAINS_MODELS else None)
        for name, stages in JOB_ASSETS.items()}
prepare_job, mixture_job = jobs["grasp_prepare"], jobs["grasp_reoptimise_mixture"]


def job_range_tags(instance: dg.DagsterInstance, job: str) -> dict[str, str]:
    """Run tags selecting every registered partition of a partitioned job (one run), else {}."""
    try:
        return full_range_tags(instance, JOB_PARTITIONS.get(job))
    except ValueError as error:
        raise ValueError(f"{job}: {error}") from None


def materialize_everything(defs: dg.Definitions, instance: dg.DagsterInstance, run_config: dict,
                           tags: dict | None = None,
                           checkpoint: Callable[[], None] | None = None) -> list[dg.ExecuteInJobResult]:
    """Runs prepare, sketch and retrain (all partitions, one run each), then fit-and-curate.

    Returns every run's result; stops after the first failed run, whose tables were left at
    their previous versions. `checkpoint` is called before each run (and after the last): the
    CLI raises there a Ctrl-C that landed between runs and that Python swallowed.
    """
    results = []
    for job in PIPELINE:
        if checkpoint is not None:
            checkpoint()
        job_config = {**run_config, "ops": {k: v for k, v in run_config.get("ops", {}).items()
                                            if k in JOB_ASSETS[job]}}
        result = defs.resolve_job_def(job).execute_in_process(
            run_config=job_config, instance=instance, raise_on_error=False,
            tags={**(tags or {}), **job_range_tags(instance, job)})
        results.append(result)
        if not result.success:
            break
    if checkpoint is not None:
        checkpoint()
    return results

"""Every stage of the graph, declared once: its name, the tables it writes and reads, its settings
section, whether it needs the workload, and its run function.

A stage has one name: its module here (`stages/<name>.py`) and under `assets/`, its Dagster op,
and its run function `run_<name>`. Its tables are the DESIGN §5 names (the Dagster asset keys).
`STAGES` is in dependency order; the asset catalog, the jobs' stage lists, the run config,
`stage_plan` and this package's exports are derived from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..infra.storage import DeltaStore
from ..workloads.base import Workload
from .base import StageResult
from .corpus_shards import run_corpus_shards
from .curated_selection import run_curated_selection
from .curation_loop import run_curation_loop
from .curation_test import run_curation_test
from .gradient_sketches import run_gradient_sketches
from .mixture_update import run_mixture_update
from .mixture_weights import run_mixture_weights
from .reference_model import run_reference_model
from .selection_validation import run_selection_validation
from .subset_outcomes import run_subset_outcomes
from .subset_plan import run_subset_plan
from .surrogates import run_surrogates
from .target_check import run_target_check
from .task_sketches import run_task_sketches


@dataclass(frozen=True)
class Stage:
    """One stage. `writes`: (table, description), primary table first (the stage's figures and
    metrics go there); empty for a stage that writes files. `section`: the `PipelineParams` field
    that configures it (None: it takes no settings). `run`: the library function; None for
    `trainer_export`, whose function (`grasp_pipeline.ops.export.export_for_trainers`, also `grasp
    export`) writes files above the stages. `call`: how the whole graph calls it from
    `(store, params, workload)`, when its arguments are not the usual `(store, [workload,] section)`.
    `on_demand`: run when asked, not when its inputs change (its input is not a table)."""

    name: str
    writes: tuple[tuple[str, str], ...]
    reads: tuple[str, ...]
    section: str | None
    workload: bool
    run: Callable[..., StageResult] | None
    call: Callable[[DeltaStore, object, Workload], StageResult] | None = None
    on_demand: bool = False

    @property
    def tables(self) -> list[str]:
        """The tables it writes, primary first."""
        return [table for table, _ in self.writes]

    def plan(self, store: DeltaStore, params, workload: Workload) -> Callable[[], StageResult]:
        """A zero-argument call of the stage with `params` (a `PipelineParams`)."""
        if self.call is not None:
            return lambda: self.call(store, params, workload)
        return lambda: self.run(store, *([workload] if self.workload else []), getattr(params, self.section))


STAGES: tuple[Stage, ...] = (
    Stage("corpus_shards", (
        ("corpus_shards", "Pool examples (byte pieces of documents, or whole rows such as images), sharded per "
                          "domain."),
        ("task_sets", "Held-out examples of every target task (by default one task per domain), each in split `dev` "
                      "(what fitting and choosing see) or `test` (only curation_test and target_check read it)."),
        ("corpus_sources", "The whole corpus's size per domain and source file (documents, examples, bytes), before "
                           "the split and the pool cap: what the export splits a domain's weight by.")),
        reads=(), section="corpus", workload=True, run=run_corpus_shards,
        call=lambda store, params, workload: run_corpus_shards(store, params.corpus, params.workload.example_bytes,
                                                               workload)),
    Stage("reference_model", (
        ("reference_models", "The warm-up model θ₀: its checkpoints at `sketch_steps` and final parameters."),),
        reads=("corpus_shards",), section="reference", workload=True, run=run_reference_model),
    Stage("gradient_sketches", (
        ("gradient_sketches", "z_i = P ∇θ ℓ(x_i; θ₀) for every pool example (vmap per-example gradients, seeded "
                              "projection), one k-block per checkpoint."),),
        reads=("reference_models", "corpus_shards"), section="sketch", workload=True, run=run_gradient_sketches),
    Stage("task_sketches", (
        ("task_sketches", "q_t = P ∇θ L_t(θ₀) per task, in the projection recorded by gradient_sketches."),),
        reads=("reference_models", "gradient_sketches", "task_sets"), section=None, workload=True,
        run=run_task_sketches,
        # no settings of its own: the projection is gradient_sketches', only the chunk size is shared
        call=lambda store, params, workload: run_task_sketches(store, workload, params.sketch.chunk_size)),
    Stage("subset_plan", (
        ("subset_plan", "Subsets sampled by the `uniform`, `dirichlet` and `stratified` samplers, each `fit` or "
                        "`holdout`, in batches."),),
        reads=("corpus_shards",), section="plan", workload=False, run=run_subset_plan),
    Stage("subset_outcomes", (
        ("subset_outcomes", "Per-task loss and utility (= −loss) of the recipe retrained on each planned subset."),),
        reads=("subset_plan", "corpus_shards", "task_sets"), section="retrain", workload=True,
        run=run_subset_outcomes),
    Stage("surrogates", (
        ("surrogates", "Fitted surrogates per method and task (GRASP and baselines), chosen by LCB on fit subsets."),
        ("surrogate_candidates", "Every declared candidate configuration with its cross-validation score and LCB."),
        ("surrogate_predictions", "Predicted and actual utility of every planned subset, per method and task."),
        ("fidelity_report", "Holdout Spearman/Pearson per method, sampler regime and fit budget, next to the noise "
                            "ceiling.")),
        reads=("gradient_sketches", "task_sketches", "subset_plan", "subset_outcomes"), section="surrogate",
        workload=False, run=run_surrogates),
    Stage("curation_loop", (
        ("curation_rounds", "Every candidate of the closed loop per round: its predicted and realised dev gain, the "
                            "refit's calibration, and which one the lower confidence bound picked."),
        ("active_outcomes", "Dev outcomes of the loop's candidates (sampler `active`), added to the refit's fit "
                            "set.")),
        reads=("surrogates", "gradient_sketches", "task_sketches", "subset_plan", "subset_outcomes", "task_sets"),
        section="loop", workload=True, run=run_curation_loop),
    Stage("curated_selection", (
        ("curated_selections", "A budget of pool examples per method: the loop's GRASP pick (composition first), the "
                               "global residual greedy `grasp_global`, grad_dot/datamodel top-k, random and full."),),
        reads=("surrogates", "gradient_sketches", "task_sketches", "curation_rounds"), section="selection",
        workload=False, run=run_curated_selection),
    Stage("mixture_weights", (
        ("mixture_weights", "`natural`, `uniform`, the loop's `grasp` pick, `grasp_optimum`, `regmix` and "
                            "`loglinear` domain mixtures with their predicted utility."),),
        reads=("surrogates", "gradient_sketches", "task_sketches", "curation_rounds", "subset_outcomes"),
        section="mixture", workload=False, run=run_mixture_weights),
    # its input is the deployment's changed corpus files (not a table), read with the corpus and mixture settings
    Stage("mixture_update", (
        ("mixture_updates", "The `grasp_update` mixture for a changed domain set from the stored surrogate: only new "
                            "and revised domains sketched, nothing refitted, the pick of a few dev-retrained "
                            "candidates (new, revised and removed domains, examples sketched, candidates' dev gains, "
                            "seconds)."),),
        reads=("surrogates", "gradient_sketches", "task_sketches", "reference_models", "corpus_shards", "task_sets",
               "subset_outcomes", "mixture_weights"),
        section="mixture_update", workload=True, run=run_mixture_update,
        call=lambda store, params, workload: run_mixture_update(store, workload, params.corpus,
                                                                params.workload.example_bytes, params.mixture,
                                                                params.mixture_update),
        on_demand=True),
    Stage("selection_validation", (
        ("selection_validation", "Per-task utility of the recipe retrained on each selection and on a sample of "
                                 "each mixture (dev examples)."),
        ("validation_verdict", "The curation test's verdict on `dev` (the recipe's seeds): gains over random "
                               "with the right null and the differences to the equal-budget controls; what method "
                               "work is judged by without touching `test`.")),
        reads=("curated_selections", "mixture_weights", "subset_outcomes", "curation_rounds"), section="validation",
        workload=True,
        run=run_selection_validation),
    Stage("curation_test", (
        ("curation_test", "The held-out proof: every selection and mixture retrained on fresh seeds and scored on "
                          "the `test` examples, with paired gains over random/natural and bootstrap intervals."),
        ("curation_test_verdict", "The headline: each method's gain over random (the right null: a selection is "
                                  "one draw) or natural, and its difference to the equal-budget controls, with "
                                  "intervals, candidates and dev retrainings."),
        ("curation_test_dirt", "Each tested selection's share of every labelled kind of dirt, beside random's (no "
                               "rows for an unlabelled corpus).")),
        reads=("curated_selections", "mixture_weights", "subset_outcomes", "corpus_shards", "task_sets",
               "curation_rounds"),
        section="test", workload=True, run=run_curation_test),
    # after the curation test (`curation_test` among its reads): the target check is the costlier, later question
    Stage("target_check", (
        ("target_check", "The proxy's mixtures and picks retrained at target scale: per-candidate test losses at "
                         "both levels."),
        ("target_check_summary", "Proxy-vs-target rank agreement (Spearman with an interval) and the picks' gains "
                                 "at target scale.")),
        reads=("curated_selections", "mixture_weights", "subset_outcomes", "corpus_shards", "task_sets",
               "curation_test"),
        section="target", workload=True, run=run_target_check,
        call=lambda store, params, workload: run_target_check(store, workload, params.target_workload().build(),
                                                              params.target)),
    Stage("trainer_export", (), reads=("curated_selections", "mixture_weights", "corpus_shards"), section="export",
          workload=False, run=None),
)

STAGE = {stage.name: stage for stage in STAGES}


def stage_ordinal(name: str) -> tuple[int, int] | None:
    """(k, N): stage `name` is the k-th of the N stages a full run materialises, in dependency order
    (progress lines say "stage k of N"); None for an on-demand stage."""
    names = [stage.name for stage in STAGES if not stage.on_demand]
    return (names.index(name) + 1, len(names)) if name in names else None

"""The catalog: every Delta table under the storage root is a Dagster asset named like the table.

A stage is one op (named like its library stage and its module under `assets/`) that writes
one or more tables; `STAGE_TABLES` says which, in one place. `stage_asset` turns a stage
function into a multi-asset with one asset per table, so the UI lists `task_sets`,
`fidelity_report` or `surrogate_candidates` like any other table, each with its own row
count, schema, Delta version and staleness. A stage that writes one table named like
itself needs no entry (`tables_of` answers `[stage]`), and a plain `@dg.asset` works too.
Run config keeps its shape: `ops: {<stage>: {config: …}}`.

`lineage` is appended to by every stage: it is an external asset (`LINEAGE_SPEC`) whose
new versions each stage reports as materialisations.

Every asset downstream of the corpus carries `AutomationCondition.eager()`, evaluated by
the `grasp_automation` sensor (assets/sensors.py, off by default): when its inputs change,
it is brought up to date, partitions included.
"""

from __future__ import annotations

import dagster as dg

# stage (op) -> the tables it writes, primary table first (the stage's figures and metrics go there)
STAGE_TABLES: dict[str, list[str]] = {
    "corpus_shards": ["corpus_shards", "task_sets"],
    "reference_model": ["reference_models"],
    "gradient_sketches": ["gradient_sketches"],
    "task_sketches": ["task_sketches"],
    "subset_plan": ["subset_plan"],
    "subset_outcomes": ["subset_outcomes"],
    "grasp_surrogate": ["surrogates", "surrogate_candidates", "surrogate_predictions", "fidelity_report"],
    "curation_loop": ["curation_rounds", "active_outcomes"],
    "curated_selection": ["curated_selections"],
    "mixture_weights": ["mixture_weights"],
    "mixture_update": ["mixture_updates"],
    "selection_validation": ["selection_validation"],
    "curation_test": ["curation_test", "curation_test_dirt"],
    "target_check": ["target_check", "target_check_summary"],
}

TABLE_DESCRIPTIONS: dict[str, str] = {
    "corpus_shards": "Pool examples (byte pieces of documents, or whole rows such as images), sharded per domain.",
    "task_sets": "Held-out examples of every target task (by default one task per domain), each in split `dev` "
                 "(what fitting and choosing see) or `test` (only curation_test and target_check read it).",
    "reference_models": "The warm-up model θ₀: its checkpoints at `sketch_steps` and final parameters.",
    "gradient_sketches": "z_i = P ∇θ ℓ(x_i; θ₀) for every pool example (vmap per-example gradients, seeded "
                         "projection), one k-block per checkpoint.",
    "task_sketches": "q_t = P ∇θ L_t(θ₀) per task, in the projection recorded by gradient_sketches.",
    "subset_plan": "Subsets sampled by the `uniform`, `dirichlet` and `stratified` samplers, each `fit` or "
                   "`holdout`, in batches.",
    "subset_outcomes": "Per-task loss and utility (= −loss) of the recipe retrained on each planned subset.",
    "surrogates": "Fitted surrogates per method and task (GRASP and baselines), chosen by LCB on fit subsets.",
    "surrogate_candidates": "Every declared candidate configuration with its cross-validation score and LCB.",
    "surrogate_predictions": "Predicted and actual utility of every planned subset, per method and task.",
    "fidelity_report": "Holdout Spearman/Pearson per method, sampler regime and fit budget, next to the noise ceiling.",
    "curation_rounds": "Every candidate of the closed loop per round: its predicted and realised dev gain, the "
                       "refit's calibration, and which one the lower confidence bound picked.",
    "active_outcomes": "Dev outcomes of the loop's candidates (sampler `active`), added to the refit's fit set.",
    "curated_selections": "A budget of pool examples per method: the loop's GRASP pick (composition first), the "
                          "global residual greedy `grasp_global`, grad_dot/datamodel top-k, random and full.",
    "mixture_weights": "`natural`, `uniform`, the loop's `grasp` pick, `grasp_optimum`, `regmix` and `loglinear` "
                       "domain mixtures with their predicted utility.",
    "mixture_updates": "The `grasp_update` mixture for a changed domain set from the stored surrogate: only new "
                       "and revised domains sketched, nothing refitted, the pick of a few dev-retrained candidates "
                       "(new, revised and removed domains, examples sketched, candidates' dev gains, seconds).",
    "selection_validation": "Per-task utility of the recipe retrained on each selection and on a sample of each "
                            "mixture (dev examples).",
    "curation_test": "The held-out proof: every selection and mixture retrained on fresh seeds and scored on the "
                     "`test` examples, with paired gains over random/natural and bootstrap intervals.",
    "curation_test_dirt": "Each tested selection's share of every labelled kind of dirt, beside random's (no rows "
                          "for an unlabelled corpus).",
    "target_check": "The proxy's mixtures and picks retrained at target scale: per-candidate test losses at both "
                    "levels.",
    "target_check_summary": "Proxy-vs-target rank agreement (Spearman with an interval) and the picks' gains at "
                            "target scale.",
}

LINEAGE_SPEC = dg.AssetSpec(
    "lineage", group_name="catalog", kinds={"deltalake"}, code_version="1",
    description="One row per table version written: the versions read, Dagster and MLflow runs, code version, "
                "parameters (`grasp lineage ID` walks it). Appended to by every stage.")


def tables_of(stage: str) -> list[str]:
    """The tables `stage` writes (its assets), primary first; `[stage]` for a stage not listed."""
    return STAGE_TABLES.get(stage, [stage])


def stage_of(table: str) -> str:
    """The stage (op) that writes `table`."""
    for stage, tables in STAGE_TABLES.items():
        if table in tables:
            return stage
    return table


def asset_keys(stages: list[str]) -> list[dg.AssetKey]:
    """The asset keys (tables) the stages write, in order."""
    return [dg.AssetKey(table) for stage in stages for table in tables_of(stage)]


def stage_asset(stage: str, *, reads: list[str], code_version: str, group_name: str, kinds: set[str],
                automate: bool = True, **multi_asset_kwargs):
    """Decorates a stage function as a multi-asset named `stage` with one asset per table it writes.

    `reads` are the tables the stage reads (each asset's deps). Every asset with inputs is
    automated with `AutomationCondition.eager()` unless `automate` is False (a stage run on
    demand, whose input is not a table). Other keywords go to `dg.multi_asset`
    (pool, partitions_def, backfill_policy, ...).
    """
    automation = dg.AutomationCondition.eager() if reads and automate else None

    def decorate(fn):
        specs = [dg.AssetSpec(table, deps=reads, description=TABLE_DESCRIPTIONS.get(table) or fn.__doc__,
                              group_name=group_name, code_version=code_version, kinds=kinds,
                              automation_condition=automation, metadata={"grasp/stage": stage})
                 for table in tables_of(stage)]
        return dg.multi_asset(name=stage, specs=specs, description=fn.__doc__, **multi_asset_kwargs)(fn)

    return decorate

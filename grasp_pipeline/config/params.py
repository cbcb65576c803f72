"""Every stage's settings: one frozen dataclass per stage, each field with its help text.

These classes are the single source of names, defaults and help for the CLI (`--config`
files), `PipelineParams` and the Dagster launchpad (assets/config.py turns each into a
`dagster.Config`). Defaults are the `demo` profile (profiles.py shrinks them for `smoke`).
The workload's settings are composed from the workloads' own dataclasses (workload.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..fields import doc


@dataclass(frozen=True)
class CorpusParams:
    corpus_path: str = doc("Parquet/JSONL file, directory or glob with text and domain columns; "
                           "empty = the embedded default corpus.", "")
    task_examples_per_domain: int = doc("Held-out examples per domain forming its task set.", 64, minimum=1)
    pool_examples_per_domain: int = doc("Pool bound per domain (0 = every example).", 400, minimum=0)
    shard_size: int = doc("Pool examples per shard (the unit of sketching).", 256, minimum=1)
    seed: int = doc("Seed of the pool sample.", 0, minimum=0)
    max_record_bytes: int = doc("Largest document (UTF-8 bytes of one record's text) ingestion accepts; a bigger one "
                                "is an error naming file and row.", 64 * 2**20, minimum=1)
    max_file_bytes: int = doc("Largest corpus file, in bytes after decompression.", 16 * 2**30, minimum=1)
    max_decompression_ratio: float = doc("A .gz file may decompress to at most this many times its size (past "
                                         "that it is refused as a likely decompression bomb).", 200.0, minimum=1)


@dataclass(frozen=True)
class ReferenceParams:
    warmup_examples: int = doc("Pool examples the reference model θ₀ warms up on.", 1000, minimum=1)
    steps: int = doc("Warm-up optimisation steps.", 150, minimum=1)
    sketch_steps: tuple[int, ...] = doc(
        "Warm-up checkpoints (steps; 0 = the initialisation, at most `steps`) at which the gradients are "
        "sketched. Each pool and task sketch concatenates one k-dimensional block per checkpoint; every "
        "sketch-based surrogate picks its block by the LCB protocol (surrogate.sketch_blocks). Early "
        "checkpoints sit where the retraining recipe trains (it starts from the same initialisation).",
        (20, 40, 150), minimum=0, nonempty=True)
    batch_size: int = doc("Warm-up batch size.", 32, minimum=1)
    lr: float = doc("Warm-up Adam learning rate.", 3e-3, above=0)
    optimizer: str = doc("Warm-up optimizer: adam or sgd.", "adam", choices=("adam", "sgd"))
    adam_beta1: float = doc("Warm-up Adam β₁ (first-moment decay).", 0.9, minimum=0, below=1)
    adam_beta2: float = doc("Warm-up Adam β₂ (second-moment decay).", 0.999, minimum=0, below=1)
    adam_eps: float = doc("Warm-up Adam ε (added to the root of the second moment).", 1e-8, above=0)
    seed: int = doc("Seed of initialisation, warm-up sample and data order.", 0, minimum=0)


@dataclass(frozen=True)
class SketchParams:
    projection: str = doc("Random projection: sjlt (sparse JL, fastest at equal error), gaussian, rademacher "
                          "or kronecker (LoGra-style, Linear layers).", "sjlt",
                          choices=("sjlt", "gaussian", "rademacher", "kronecker"))
    k: int = doc("Sketch dimension.", 256, minimum=1)
    seed: int = doc("Projection seed.", 0, minimum=0)
    chunk_size: int = doc("Examples per vmap chunk (bounds memory).", 64, minimum=1)
    nonzeros: int = doc("SJLT nonzeros per gradient coordinate (also the Kronecker second stage).", 4, minimum=1)
    factor_dim: int = doc("Kronecker projection: width each layer's input/output factor is projected to.", 32,
                          minimum=1)
    storage_dtype: str = doc("Precision the sketches are rounded to before storage: float32, float16, bfloat16.",
                             "float32", choices=("float32", "float16", "bfloat16"))


@dataclass(frozen=True)
class PlanParams:
    uniform_fraction: float = doc("uniform sampler: every subset is this fraction of the pool (the classic "
                                  "fixed-size LDS regime).", 0.1, above=0, maximum=1)
    uniform_fit: int = doc("uniform sampler: subsets with role `fit` (fit and choose the surrogates).", 64, minimum=0)
    uniform_holdout: int = doc("uniform sampler: subsets with role `holdout` (only report fidelity).", 32, minimum=0)
    dirichlet_fit: int = doc("dirichlet sampler: `fit` subsets.", 96, minimum=0)
    dirichlet_holdout: int = doc("dirichlet sampler: `holdout` subsets.", 32, minimum=0)
    dirichlet_min_fraction: float = doc("dirichlet sampler: smallest subset, as a fraction of the pool "
                                        "(sizes are uniform between min and max).", 0.02, above=0, maximum=1)
    dirichlet_max_fraction: float = doc("dirichlet sampler: largest subset, as a fraction of the pool.", 0.3,
                                        above=0, maximum=1)
    dirichlet_beta: float = doc("dirichlet sampler: concentration β of the domain proportions ~ Dir(β) "
                                "(small = lopsided mixtures).", 0.5, above=0)
    subsets_per_batch: int = doc("Subsets per retraining batch (one partition of subset_outcomes).", 32, minimum=1)
    seed: int = doc("Seed of the plan; each subset draws from (seed, subset_id).", 0, minimum=0)


@dataclass(frozen=True)
class RetrainParams:
    steps: int = doc("Optimisation steps per retraining (fixed-steps recipe).", 40, minimum=1)
    batch_size: int = doc("Batch size per step.", 16, minimum=1)
    lr: float = doc("Learning rate.", 3e-3, above=0)
    optimizer: str = doc("adam or sgd.", "adam", choices=("adam", "sgd"))
    adam_beta1: float = doc("Adam β₁ (first-moment decay).", 0.9, minimum=0, below=1)
    adam_beta2: float = doc("Adam β₂ (second-moment decay).", 0.999, minimum=0, below=1)
    adam_eps: float = doc("Adam ε (added to the root of the second moment).", 1e-8, above=0)
    init_seed: int = doc("Initialisation seed shared by every retraining.", 0, minimum=0)
    data_order_seed: int = doc("Base data-order seed; repeat r uses seed + r.", 0, minimum=0)
    repeats: int = doc("Retrainings per subset with other data-order seeds (≥2 gives a noise ceiling; "
                       "doubles the retraining cost).", 1, minimum=1)
    models_per_batch: int = doc("Subsets trained together in one vectorised loop.", 16, minimum=1)


@dataclass(frozen=True)
class SurrogateParams:
    """The finite candidate sets and the CV/LCB protocol settings."""

    cv_folds: int = doc("K of the K-fold cross-validation over fit subsets (folds stratified by sampler).", 5,
                        minimum=2)
    delta: float = doc("LCB level: each candidate's score is mean − z_{1−δ/|C|}·sd/√K (Bonferroni over "
                       "the candidate set).", 0.1, above=0, below=1)
    seed: int = doc("Seed of the CV folds and of the fit-budget draws.", 0, minimum=0)
    grasp_size_terms: tuple[str, ...] = doc("GRASP candidates: size term φ(|S|), any of none, linear, log.",
                                            ("none", "linear", "log"), choices=("none", "linear", "log"), nonempty=True)
    grasp_normalisations: tuple[str, ...] = doc("GRASP candidates: normalisation N(S) of the sketch sum, any "
                                                "of none (1), sqrt (1/√|S|), mean (1/|S|).",
                                                ("none", "sqrt", "mean"), choices=("none", "sqrt", "mean"),
                                                nonempty=True)
    grasp_geometries: tuple[str, ...] = doc("GRASP candidates: penalty geometry H, identity (one weight c) "
                                            "and/or diagonal (learned, non-negative, with ridge).",
                                            ("identity", "diagonal"), choices=("identity", "diagonal"), nonempty=True)
    grasp_ridges: tuple[float, ...] = doc("GRASP candidates: ridge strengths on the learned diagonal H "
                                          "(unit-RMS columns).", (0.01, 0.1, 1.0), minimum=0)
    grasp_sketch_dims: tuple[int, ...] = doc("GRASP candidates: sketch-dimension prefixes k' (0 = all k).", (0,),
                                             minimum=0, nonempty=True)
    sketch_blocks: tuple[int, ...] = doc("Checkpoint blocks the sketch methods (grasp, grad_dot, trak) choose "
                                         "from; empty = each block alone (every block when there is one); "
                                         "-1 = all blocks concatenated.", (), minimum=-1)
    datamodel_ridges: tuple[float, ...] = doc("datamodel candidates: ridge λ of the membership regression.",
                                              (0.1, 1.0, 10.0, 100.0), above=0, nonempty=True)
    trak_damping: float = doc("trak: damping λ relative to the mean eigenvalue of ZᵀZ.", 1e-3, minimum=0)
    fidelity_fit_budgets: tuple[int, ...] = doc("Fit-subset counts at which fidelity is reported too (the "
                                                "whole protocol is repeated on a stratified subset).",
                                                (16, 32, 64, 128), minimum=2)


@dataclass(frozen=True)
class SelectionParams:
    budget_fraction: float = doc("Budget B as a fraction of the pool.", 0.1, above=0, maximum=1)
    random_seeds: tuple[int, ...] = doc("Seeds of the `random-<seed>` reference selections.", (0, 1, 2), minimum=0)
    task_weights: dict[str, float] = doc("Weight of each task in the objective (missing tasks weigh 1), "
                                         "e.g. {python_docs = 2.0}.", default_factory=dict, minimum=0)
    task_scale: str = doc(
        "utility_std: each task's weight is divided by the spread of its retrained utility over the fit "
        "subsets, so the objective adds standardised gains and a task whose loss moves a lot (a script the "
        "rest of the pool lacks) cannot take the whole budget; none: raw utility.", "utility_std",
        choices=("utility_std", "none"))
    max_per_domain: int = doc("At most this many examples per domain (0 = no quota).", 0, minimum=0)
    exclude_example_ids: tuple[int, ...] = doc("Example ids never selected.", ())
    dedup_content: bool = doc("At most one example per content hash (exact duplicates).", True)
    greedy: str = doc("Residual greedy: lazy (the exact greedy's rows, with Cauchy–Schwarz bounds), exact, "
                      "or batched (approximate, fastest at 10⁶ candidates).", "lazy",
                      choices=("lazy", "exact", "batched"))
    balance_labels: bool = doc(
        "Pools with a `label` column (classification workloads): grasp, grad_dot and datamodel take at most "
        "ceil(budget / labels) per label; gradients at θ₀ otherwise pile onto the worst-fitted class.", True)
    protect_rounds: int = doc(
        "Rounds of multiplicative task re-weighting (0 = off) until the surrogate predicts every task at least "
        "as good under the grasp selection as under a random selection of the same budget.", 10, minimum=0)
    protect_rate: float = doc("Log-weight step per standardised unit of predicted shortfall.", 1.0, minimum=0)
    protect_margin: float = doc(
        "The predicted gain over random a task must reach, in units of its utility spread: a margin for the "
        "surrogate's own error (it over-predicts tasks whose loss is steep in their data share).", 0.5)
    trust_region: float = doc(
        "Utility (nats) the grasp selection pays per squared standard deviation its mean sketch moves from "
        "random selections' (on the coordinates the surrogate uses); 0 = off.", 1e-3, minimum=0)


@dataclass(frozen=True)
class MixtureParams:
    budget_fraction: float = doc("Budget B as a fraction of the pool (the mixture's sample size).", 0.1,
                                 above=0, maximum=1)
    max_repeats: float = doc("A domain may supply at most max_repeats × its pool examples.", 1.0, above=0)
    task_weights: dict[str, float] = doc("Weight of each task in the objective (missing tasks weigh 1).",
                                         default_factory=dict, minimum=0)


@dataclass(frozen=True)
class ValidationParams:
    models_per_batch: int = doc("Selections retrained together in one vectorised loop.", 16, minimum=1)
    repeats: int = doc("Retrainings per selection with other data orders (utilities are averaged).", 2, minimum=1)
    mixture_seed: int = doc("Seed of the sample drawn from each mixture for its validation.", 0, minimum=0)


@dataclass(frozen=True)
class ExportParams:
    """What `trainer_export` / `grasp export` writes for trainers (grasp_pipeline/export.py)."""

    destination: str = doc("Folder or object-store URI the trainer files go to; empty = `exports` under the "
                           "storage root.", "")
    megatron_prefix: str = doc("Data-path prefix of each domain in the Megatron-style blend string; {domain} is "
                               "replaced by the domain name (e.g. /data/{domain}_text_document).", "{domain}")
    methods: tuple[str, ...] = doc("Selection and mixture methods to export (empty = every method).", ())


@dataclass(frozen=True)
class MaintenanceParams:
    """Table maintenance (`grasp_maintain` / `grasp maintain`, grasp_pipeline/maintenance.py)."""

    tables: tuple[str, ...] = doc("Tables to maintain (empty = every Delta table under the storage root).", ())
    compact: bool = doc("Compact small files into larger ones (Delta OPTIMIZE; rows are unchanged).", True)
    target_file_mb: int = doc("Size compaction aims for per file, in MiB.", 128, minimum=1)
    checkpoint: bool = doc("Write a checkpoint of each table's log (faster table opening).", True)
    vacuum: bool = doc("Delete data files that no table version worth keeping references.", True)
    keep: str = doc("Which versions vacuum keeps readable: `lineage` (every version the lineage table records, "
                    "as written or as read) or `outputs` (only what reproducing the recorded selections and "
                    "mixtures needs); the current version always.", "lineage", choices=("lineage", "outputs"))
    retention_hours: int = doc("Vacuum deletes only files removed from the table at least this many hours ago "
                               "(protects readers of recent versions and writers in flight).", 168, minimum=0)
    log_retention_days: int = doc("delta.logRetentionDuration set on every table: how long its history "
                                  "(time travel) survives log cleanup.", 3650, minimum=1)
    dry_run: bool = doc("Report what would be compacted and deleted, change nothing.", False)


STAGE_PARAMS = (CorpusParams, ReferenceParams, SketchParams, PlanParams, RetrainParams, SurrogateParams,
                SelectionParams, MixtureParams, ValidationParams, ExportParams, MaintenanceParams)


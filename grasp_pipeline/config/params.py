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
    task_examples_per_domain: int = doc("Held-out examples per domain forming its task set.", 64)
    pool_examples_per_domain: int = doc("Pool bound per domain (0 = every example).", 400)
    shard_size: int = doc("Pool examples per shard (the unit of sketching).", 256)
    seed: int = doc("Seed of the pool sample.", 0)


@dataclass(frozen=True)
class ReferenceParams:
    warmup_examples: int = doc("Pool examples the reference model θ₀ warms up on.", 1000)
    steps: int = doc("Warm-up optimisation steps.", 150)
    sketch_steps: tuple[int, ...] = doc(
        "Warm-up checkpoints (steps; 0 = the initialisation, at most `steps`) at which the gradients are "
        "sketched. Each pool and task sketch concatenates one k-dimensional block per checkpoint; every "
        "sketch-based surrogate picks its block by the LCB protocol (surrogate.sketch_blocks). Early "
        "checkpoints sit where the retraining recipe trains (it starts from the same initialisation).",
        (20, 40, 150))
    batch_size: int = doc("Warm-up batch size.", 32)
    lr: float = doc("Warm-up Adam learning rate.", 3e-3)
    optimizer: str = doc("Warm-up optimizer: adam or sgd.", "adam")
    adam_beta1: float = doc("Warm-up Adam β₁ (first-moment decay).", 0.9)
    adam_beta2: float = doc("Warm-up Adam β₂ (second-moment decay).", 0.999)
    adam_eps: float = doc("Warm-up Adam ε (added to the root of the second moment).", 1e-8)
    seed: int = doc("Seed of initialisation, warm-up sample and data order.", 0)


@dataclass(frozen=True)
class SketchParams:
    projection: str = doc("Random projection: sjlt (sparse JL, fastest at equal error), gaussian, rademacher "
                          "or kronecker (LoGra-style, Linear layers).", "sjlt")
    k: int = doc("Sketch dimension.", 256)
    seed: int = doc("Projection seed.", 0)
    chunk_size: int = doc("Examples per vmap chunk (bounds memory).", 64)
    nonzeros: int = doc("SJLT nonzeros per gradient coordinate (also the Kronecker second stage).", 4)
    factor_dim: int = doc("Kronecker projection: width each layer's input/output factor is projected to.", 32)
    storage_dtype: str = doc("Precision the sketches are rounded to before storage: float32, float16, bfloat16.",
                             "float32")


@dataclass(frozen=True)
class PlanParams:
    uniform_fraction: float = doc("uniform sampler: every subset is this fraction of the pool (the classic "
                                  "fixed-size LDS regime).", 0.1)
    uniform_fit: int = doc("uniform sampler: subsets with role `fit` (fit and choose the surrogates).", 64)
    uniform_holdout: int = doc("uniform sampler: subsets with role `holdout` (only report fidelity).", 32)
    dirichlet_fit: int = doc("dirichlet sampler: `fit` subsets.", 96)
    dirichlet_holdout: int = doc("dirichlet sampler: `holdout` subsets.", 32)
    dirichlet_min_fraction: float = doc("dirichlet sampler: smallest subset, as a fraction of the pool "
                                        "(sizes are uniform between min and max).", 0.02)
    dirichlet_max_fraction: float = doc("dirichlet sampler: largest subset, as a fraction of the pool.", 0.3)
    dirichlet_beta: float = doc("dirichlet sampler: concentration β of the domain proportions ~ Dir(β) "
                                "(small = lopsided mixtures).", 0.5)
    subsets_per_batch: int = doc("Subsets per retraining batch (one partition of subset_outcomes).", 32)
    seed: int = doc("Seed of the plan; each subset draws from (seed, subset_id).", 0)


@dataclass(frozen=True)
class RetrainParams:
    steps: int = doc("Optimisation steps per retraining (fixed-steps recipe).", 40)
    batch_size: int = doc("Batch size per step.", 16)
    lr: float = doc("Learning rate.", 3e-3)
    optimizer: str = doc("adam or sgd.", "adam")
    adam_beta1: float = doc("Adam β₁ (first-moment decay).", 0.9)
    adam_beta2: float = doc("Adam β₂ (second-moment decay).", 0.999)
    adam_eps: float = doc("Adam ε (added to the root of the second moment).", 1e-8)
    init_seed: int = doc("Initialisation seed shared by every retraining.", 0)
    data_order_seed: int = doc("Base data-order seed; repeat r uses seed + r.", 0)
    repeats: int = doc("Retrainings per subset with other data-order seeds (≥2 gives a noise ceiling; "
                       "doubles the retraining cost).", 1)
    models_per_batch: int = doc("Subsets trained together in one vectorised loop (stacked models: on CPU a "
                                "few, whose step stays in cache; on a GPU 16–64).", 4)
    workers: int = doc("CPU processes that train groups of subsets side by side, one thread each (0 = one "
                       "per core; 1 = in the stage's process); the outcomes do not depend on it. GPUs train "
                       "in the stage's process.", 0)
    compile: bool = doc("Run each retraining step through torch.compile (fused kernels: several times faster "
                        "on CPU after a compile of seconds to a minute per process and batch shape, cached on "
                        "disk); falls back to eager where compiling fails.", False)


@dataclass(frozen=True)
class SurrogateParams:
    """The finite candidate sets and the CV/LCB protocol settings."""

    cv_folds: int = doc("K of the K-fold cross-validation over fit subsets (folds stratified by sampler).", 5)
    delta: float = doc("LCB level: each candidate's score is mean − z_{1−δ/|C|}·sd/√K (Bonferroni over "
                       "the candidate set).", 0.1)
    seed: int = doc("Seed of the CV folds and of the fit-budget draws.", 0)
    grasp_size_terms: tuple[str, ...] = doc("GRASP candidates: size term φ(|S|), any of none, linear, log.",
                                            ("none", "linear", "log"))
    grasp_normalisations: tuple[str, ...] = doc("GRASP candidates: normalisation N(S) of the sketch sum, any "
                                                "of none (1), sqrt (1/√|S|), mean (1/|S|).",
                                                ("none", "sqrt", "mean"))
    grasp_geometries: tuple[str, ...] = doc("GRASP candidates: penalty geometry H, identity (one weight c) "
                                            "and/or diagonal (learned, non-negative, with ridge).",
                                            ("identity", "diagonal"))
    grasp_ridges: tuple[float, ...] = doc("GRASP candidates: ridge strengths on the learned diagonal H "
                                          "(unit-RMS columns).", (0.01, 0.1, 1.0))
    grasp_sketch_dims: tuple[int, ...] = doc("GRASP candidates: sketch-dimension prefixes k' (0 = all k).", (0,))
    sketch_blocks: tuple[int, ...] = doc("Checkpoint blocks the sketch methods (grasp, grad_dot, trak) choose "
                                         "from; empty = each block alone (every block when there is one); "
                                         "-1 = all blocks concatenated.", ())
    datamodel_ridges: tuple[float, ...] = doc("datamodel candidates: ridge λ of the membership regression.",
                                              (0.1, 1.0, 10.0, 100.0))
    trak_damping: float = doc("trak: damping λ relative to the mean eigenvalue of ZᵀZ.", 1e-3)
    fidelity_fit_budgets: tuple[int, ...] = doc("Fit-subset counts at which fidelity is reported too (the "
                                                "whole protocol is repeated on a stratified subset).",
                                                (16, 32, 64, 128))
    workers: int = doc("Processes the candidates' cross-validation is spread over (0 = one per CPU core, "
                       "1 = in the stage's own process); the results do not depend on it.", 0)


@dataclass(frozen=True)
class SelectionParams:
    budget_fraction: float = doc("Budget B as a fraction of the pool.", 0.1)
    random_seeds: tuple[int, ...] = doc("Seeds of the `random-<seed>` reference selections.", (0, 1, 2))
    task_weights: dict[str, float] = doc("Weight of each task in the objective (missing tasks weigh 1), "
                                         "e.g. {python_docs = 2.0}.", default_factory=dict)
    task_scale: str = doc(
        "utility_std: each task's weight is divided by the spread of its retrained utility over the fit "
        "subsets, so the objective adds standardised gains and a task whose loss moves a lot (a script the "
        "rest of the pool lacks) cannot take the whole budget; none: raw utility.", "utility_std")
    max_per_domain: int = doc("At most this many examples per domain (0 = no quota).", 0)
    exclude_example_ids: tuple[int, ...] = doc("Example ids never selected.", ())
    dedup_content: bool = doc("At most one example per content hash (exact duplicates).", True)
    greedy: str = doc("Residual greedy: lazy (the exact greedy's rows, with Cauchy–Schwarz bounds), exact, "
                      "or batched (approximate, fastest at 10⁶ candidates).", "lazy")
    balance_labels: bool = doc(
        "Pools with a `label` column (classification workloads): grasp, grad_dot and datamodel take at most "
        "ceil(budget / labels) per label; gradients at θ₀ otherwise pile onto the worst-fitted class.", True)
    protect_rounds: int = doc(
        "Rounds of multiplicative task re-weighting (0 = off) until the surrogate predicts every task at least "
        "as good under the grasp selection as under a random selection of the same budget.", 10)
    protect_rate: float = doc("Log-weight step per standardised unit of predicted shortfall.", 1.0)
    protect_margin: float = doc(
        "The predicted gain over random a task must reach, in units of its utility spread: a margin for the "
        "surrogate's own error (it over-predicts tasks whose loss is steep in their data share).", 0.5)
    trust_region: float = doc(
        "Utility (nats) the grasp selection pays per squared standard deviation its mean sketch moves from "
        "random selections' (on the coordinates the surrogate uses); 0 = off.", 1e-3)


@dataclass(frozen=True)
class MixtureParams:
    budget_fraction: float = doc("Budget B as a fraction of the pool (the mixture's sample size).", 0.1)
    max_repeats: float = doc("A domain may supply at most max_repeats × its pool examples.", 1.0)
    task_weights: dict[str, float] = doc("Weight of each task in the objective (missing tasks weigh 1).",
                                         default_factory=dict)


@dataclass(frozen=True)
class ValidationParams:
    models_per_batch: int = doc("Selections retrained together in one vectorised loop.", 16)
    repeats: int = doc("Retrainings per selection with other data orders (utilities are averaged).", 2)
    mixture_seed: int = doc("Seed of the sample drawn from each mixture for its validation.", 0)


STAGE_PARAMS = (CorpusParams, ReferenceParams, SketchParams, PlanParams, RetrainParams, SurrogateParams,
                SelectionParams, MixtureParams, ValidationParams)


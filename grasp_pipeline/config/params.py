"""Every stage's settings: one frozen dataclass per stage, each field with its help text.

These classes are the single source of names, defaults and help for the CLI (`--config`
files), `PipelineParams` and the Dagster launchpad (assets/config.py turns each into a
`dagster.Config`). Defaults are the `demo` profile (profiles.py shrinks them for `smoke`).
The workload's settings are composed from the workloads' own dataclasses (workload.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..infra.fields import doc
from .corpus import CorpusParams as CorpusParams  # its own module: the corpus's settings are the longest


@dataclass(frozen=True)
class OptimizerParams:
    """The optimiser fields a training recipe shares: the reference warm-up (`reference`) and the
    retraining recipe (`retrain`) each read their own values of them."""

    # upper bounds catch a typo (1e308) at the door instead of a NaN warm-up after minutes of work
    lr: float = doc("Learning rate (peak, before the schedule).", 0.2, above=0, maximum=100.0)
    lr_schedule: str = doc("Learning-rate schedule over the steps: constant, linear or cosine (both decay "
                           "to 0, so the outcome depends less on which examples a data order puts last).",
                           "cosine", choices=("constant", "linear", "cosine"))
    optimizer: str = doc("adam or sgd.", "adam", choices=("adam", "sgd"))
    adam_beta1: float = doc("Adam β₁ (first-moment decay).", 0.9, minimum=0, below=1)
    adam_beta2: float = doc("Adam β₂ (second-moment decay).", 0.999, minimum=0, below=1)
    adam_eps: float = doc("Adam ε (added to the root of the second moment).", 1e-8, above=0)


def _default(params_cls, name: str, default):
    """`params_cls`'s field `name` (its help text and valid range) with another default."""
    inherited = {f.name: f for f in fields(params_cls)}[name]
    return field(default=default, metadata=inherited.metadata)


@dataclass(frozen=True)
class ReferenceParams(OptimizerParams):
    """The reference model θ₀: a warm-up on pool examples, sketched at its checkpoints (the
    optimiser fields are `OptimizerParams`'s; the warm-up's schedule defaults to constant)."""

    warmup_examples: int = doc("Pool examples the reference model θ₀ warms up on.", 1000, minimum=1)
    steps: int = doc("Warm-up optimisation steps.", 60, minimum=1, maximum=10_000_000)
    sketch_steps: tuple[int, ...] = doc(
        "Warm-up checkpoints (steps; 0 = the initialisation, at most `steps`) at which the gradients are "
        "sketched. Each pool and task sketch concatenates one k-dimensional block per checkpoint; every "
        "sketch-based surrogate picks its block by the LCB protocol (surrogate.sketch_blocks). Early "
        "checkpoints sit where the retraining recipe trains (it starts from the same initialisation).",
        (10, 30, 60), minimum=0, nonempty=True)
    batch_size: int = doc("Warm-up batch size.", 32, minimum=1)
    lr_schedule: str = _default(OptimizerParams, "lr_schedule", "constant")
    seed: int = doc("Seed of initialisation, warm-up sample and data order.", 0, minimum=0)
    checkpoint_shard_mb: int = doc(
        "Largest checkpoint file, in MiB: θ₀ and each checkpoint are stored under <root>/checkpoints/ as "
        "files of at most this much tensor data (a larger tensor gets a file of its own), so writing and "
        "loading hold about one file in memory, never the whole model as bytes. Each file is one put "
        "(S3 caps a single PUT at 5 GiB).", 512, minimum=1, maximum=4096)


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
    uniform_fit: int = doc("uniform sampler: subsets with role `fit` (fit and choose the surrogates).", 48, minimum=0)
    uniform_holdout: int = doc("uniform sampler: subsets with role `holdout` (only report fidelity).", 24, minimum=0)
    dirichlet_fit: int = doc("dirichlet sampler: `fit` subsets.", 64, minimum=0)
    dirichlet_holdout: int = doc("dirichlet sampler: `holdout` subsets.", 24, minimum=0)
    dirichlet_min_fraction: float = doc("dirichlet sampler: smallest subset, as a fraction of the pool "
                                        "(sizes are uniform between min and max).", 0.02, above=0, maximum=1)
    dirichlet_max_fraction: float = doc("dirichlet sampler: largest subset, as a fraction of the pool.", 0.3,
                                        above=0, maximum=1)
    dirichlet_beta: float = doc("dirichlet sampler: concentration β of the domain proportions ~ Dir(β) "
                                "(small = lopsided mixtures).", 0.5, above=0)
    stratified_fit: int = doc("stratified sampler (the pool's per-domain counts of a uniform_fraction subset; "
                              "only the examples differ): `fit` subsets.", 32, minimum=0)
    stratified_holdout: int = doc("stratified sampler: `holdout` subsets.", 24, minimum=0)
    subsets_per_batch: int = doc("Subsets per retraining batch (one partition of subset_outcomes).", 32, minimum=1)
    seed: int = doc("Seed of the plan; each subset draws from (seed, subset_id).", 0, minimum=0)


@dataclass(frozen=True)
class RetrainParams(OptimizerParams):
    """The retraining recipe every subset is trained with (the optimiser fields are `OptimizerParams`'s)."""

    steps: int = doc("Optimisation steps per retraining (fixed-steps recipe).", 60, minimum=1, maximum=10_000_000)
    batch_size: int = doc("Batch size per step.", 16, minimum=1)
    init_seed: int = doc("Initialisation seed shared by every retraining.", 0, minimum=0)
    data_order_seed: int = doc("Base data-order seed; repeat r uses seed + r.", 0, minimum=0)
    repeats: int = doc("Retrainings per subset with other data-order seeds (utilities are averaged).", 1, minimum=1)
    holdout_repeats: int = doc("Retrainings per holdout subset (at least `repeats`): ≥ 2 measures each sampler's "
                               "noise ceiling and averages the targets fidelity is scored on.", 2, minimum=1)
    models_per_batch: int = doc("Subsets trained together in one vectorised loop (stacked models: on CPU a "
                                "few, whose step stays in cache; on a GPU 16–64).", 4, minimum=1)
    workers: int = doc("CPU processes that train groups of subsets side by side, one thread each (0 = one "
                       "per core; 1 = in the stage's process); the outcomes do not depend on it. GPUs train "
                       "in the stage's process.", 0, minimum=0)
    compile: bool = doc("Run each retraining step through torch.compile (fused kernels: several times faster "
                        "on CPU after a compile of seconds to a minute per process and batch shape, cached on "
                        "disk); falls back to eager where compiling fails.", False)


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
                                            "and/or diagonal (learned, non-negative, with ridge); none = no "
                                            "penalty, alignment only (the ablation that shows what the interaction "
                                            "term buys).", ("identity", "diagonal"),
                                            choices=("identity", "diagonal", "none"), nonempty=True)
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
    fidelity_draws: int = doc("Seeded draws of the fit subsets at each of fidelity_fit_budgets; the report gives "
                              "the median over draws and their range (one draw of a small budget is noise).",
                              5, minimum=1)
    workers: int = doc("Processes the candidates' cross-validation is spread over (0 = one per CPU core, "
                       "1 = in the stage's own process); the results do not depend on it.", 0, minimum=0)


@dataclass(frozen=True)
class SelectionParams:
    budget_fraction: float = doc("Budget B as a fraction of the pool (must equal loop.budget_fraction).", 0.1,
                                 above=0, maximum=1)
    random_seeds: tuple[int, ...] = doc("Seeds of the `random-<seed>` reference selections.", (0, 1, 2), minimum=0)
    control_draws: int = doc("random_at_counts: random selections at the grasp pick's per-domain counts (what "
                             "its composition alone buys); the curation test averages them.", 10, minimum=0)
    control_seed: int = doc("random_at_counts draw j uses seed control_seed + j.", 5000, minimum=0)
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
    budget_fraction: float = doc("Budget B as a fraction of the pool (the mixture's sample size; must equal "
                                 "loop.budget_fraction).", 0.1,
                                 above=0, maximum=1)
    max_repeats: float = doc("A domain may supply at most max_repeats × its pool examples.", 1.0, above=0)
    peers: tuple[str, ...] = doc("Peer mixers fitted on the same fit subsets and tested beside grasp: regmix "
                                 "(LightGBM per task, Dirichlet candidates, top-k mean) and/or loglinear (a "
                                 "data-mixing law with a KL pull to the natural mix).", ("regmix", "loglinear"),
                                 choices=("regmix", "loglinear"))
    regmix_candidates: int = doc("regmix: Dirichlet candidate mixtures scored by the regressors.", 20000, minimum=1)
    regmix_top_k: int = doc("regmix: the mixture is the mean of this many best candidates.", 100, minimum=1)
    regmix_concentration: float = doc("regmix: candidates ~ Dirichlet(concentration × natural mix).", 10.0, above=0)
    loglinear_kl: float = doc("loglinear: weight λ of KL(π ‖ natural) subtracted from the predicted utility.", 0.01,
                              minimum=0)
    seed: int = doc("Seed of the peer mixers (trees, candidates).", 0, minimum=0)


@dataclass(frozen=True)
class TrainingParams:
    """How a stage that trains models trains them (`retrain.train_jobs`): stacks of
    `models_per_batch`, spread over `workers` processes. The stages after retraining share it."""

    models_per_batch: int = doc("Models trained together in one vectorised loop (on CPU a few, whose step stays "
                                "in cache; on a GPU 16–64).", 4, minimum=1)
    workers: int = doc("CPU processes that train groups of models side by side, one thread each (0 = one per "
                       "core; 1 = in the stage's process); the results do not depend on it.", 0, minimum=0)


@dataclass(frozen=True)
class MixtureUpdateParams(TrainingParams):
    """`mixture_update` / `grasp mixture-update`: re-optimise the mixture after the domain set changed,
    sketching only new and revised domains and refitting no fitted task (grasp_pipeline/stages/mixture_update.py);
    a few dev retrainings pick between the re-optimised mixture, steps toward it from the natural mix
    and the stored mixture carried over. The new corpus is `corpus.corpus_path`, read with the other
    corpus settings of the stored run; the budget, caps and task weights are the `mixture` section's."""

    new_task_prior: str = doc("Surrogate params of a task the fit never saw (a new domain's): the cross-task "
                              "`mean` or `median` of the fitted tasks' alignment weight b, penalty, intercept "
                              "and size coefficient.", "mean", choices=("mean", "median"))
    chunk_size: int = doc("Examples per vmap chunk while sketching the new domains (bounds memory; the "
                          "projection is the one gradient_sketches recorded).", 64, minimum=1)
    mixture_steps: tuple[float, ...] = doc("Candidates beside natural and the optimum (both always checked): "
                                           "fractions of the way from the new corpus's natural mix to the "
                                           "re-optimised mixture.", (0.5,), minimum=0, maximum=1)
    reuse: bool = doc("Also a candidate: the stored GRASP mixture carried over (unchanged domains keep its ratios "
                      "at their natural total share; new and revised domains get their natural shares).", True)
    check_samples: int = doc("Dev retrainings per candidate (mixture samples, paired across candidates); the pick "
                             "has the best task-weighted mean dev gain over natural, ties to the earlier candidate. "
                             "0 = retrain nothing: the optimum is the pick.", 4, minimum=0)
    check_seed: int = doc("Seed of the candidates' mixture samples and data orders (sample j uses seed + j; not "
                          "the loop's, not the test's).", 600, minimum=0)
    refit_new_tasks: bool = doc("After the check, fit each new task's alignment weight b and intercept on its "
                                "retrained samples (the prior's penalty kept), re-optimise, and check that optimum "
                                "(`refit_optimum`) too: check_samples more retrainings (off: on the demo its "
                                "optimum lost more on dev than the prior's).", False)


@dataclass(frozen=True)
class ValidationParams(TrainingParams):
    repeats: int = doc("Retrainings per selection with other data orders (utilities are averaged).", 2, minimum=1)
    mixture_samples: int = doc("Samples retrained per mixture, paired across mixtures.", 10, minimum=1)
    mixture_seed: int = doc("Seed of the mixture samples (sample j draws from seed + j).", 0, minimum=0)
    random_seeds: tuple[int, ...] = doc("Random reference selections of the dev verdict (the curation test's "
                                        "statistics on dev; at least 3, 20 as the test has).", tuple(range(200, 220)),
                                        minimum=0)


@dataclass(frozen=True)
class LoopParams(TrainingParams):
    """The closed loop (grasp_pipeline/training/loop.py): candidates retrained on dev, added to the fit set as
    sampler `active`, refit; the pick has the best lower confidence bound over bootstrap refits."""

    rounds: int = doc("Rounds of propose → retrain on dev → refit.", 2, minimum=1)
    budget_fraction: float = doc("Budget of the candidates, as a fraction of the pool (selection.budget_fraction "
                                 "and mixture.budget_fraction must equal it: checked with the settings).", 0.1,
                                 above=0, maximum=1)
    task_weights: dict[str, float] = doc(
        "The target: each task's weight (missing tasks weigh 1), e.g. {python_docs = 4.0, python_source = 4.0}. "
        "The loop optimises the weighted mean utility and records the target in curation_rounds, where "
        "curated_selection, mixture_weights, mixture_update and both verdicts read it: one target for every "
        "stage.", default_factory=dict, minimum=0)
    training_bytes: int = doc("Bytes of the training run the mixtures are for (every mixer caps a domain at "
                              "max_epochs passes over its corpus bytes); 0 = unstated, no cap.", 0, minimum=0)
    max_epochs: float = doc("The most passes over a domain's corpus bytes a mixture may ask for (with "
                            "training_bytes; ~4 cost little: data-constrained scaling).", 4.0, above=0)
    mixture_steps: tuple[float, ...] = doc("Mixture candidates: fractions of the way from the natural mix to the "
                                           "refit's optimum (0 = natural).", (0.0, 0.25, 0.5, 1.0),
                                           minimum=0, maximum=1, nonempty=True)
    trust_radii: tuple[float, ...] = doc("Selection candidates: within-domain trust-region strengths of round 0 "
                                         "(nats per squared sd); later rounds scale them by the calibration.",
                                         (1e-3, 1e-2, 1e-1), minimum=0, nonempty=True)
    selection_search: str = doc("GRASP's selection candidates: screen (the surrogate ranks screen_draws random draws "
                                "at the counts; the best, blocks × trust radii of them, are retrained; chosen on dev) "
                                "or greedy (residual greedy, trust regions).", "screen", choices=("greedy", "screen"))
    screen_draws: int = doc("screen: random draws ranked per round.", 2000, minimum=1, maximum=10_000)  # seed gap
    selection_blocks: tuple[int, ...] = doc("Sketch blocks (reference checkpoints) the selection candidates are "
                                            "built on, each with its own refit; empty = the block the surrogate's "
                                            "LCB chose and the last checkpoint's.", (), minimum=-1)
    mixture_samples: int = doc("Samples retrained per mixture candidate.", 2, minimum=1)
    order_seeds: tuple[int, ...] = doc("Data-order seeds of the loop's dev retrainings (not the recipe's, not "
                                       "the test's).", (500, 501), minimum=0, nonempty=True)
    random_seeds: tuple[int, ...] = doc("Seeds of the random selections gains are measured against.",
                                        (900, 901, 902, 903), minimum=0, nonempty=True)
    bootstrap: int = doc("Bootstrap refits behind the lower confidence bound of the pick.", 10, minimum=2)
    lcb_z: float = doc("The pick maximises mean − lcb_z × sd of its gain over bootstrap draws.", 1.0, minimum=0)
    pick: str = doc("What the lower bound is of: realised (the candidate's measured dev gain over random, "
                    "resampling seeds/samples and random references; the default, because on the demo the refit "
                    "over-predicts optimised candidates: see the calibration slopes) or predicted (the refit "
                    "surrogate's predicted gain over bootstrap refits).", "realised",
                    choices=("realised", "predicted"))
    seed: int = doc("Seed of the mixture samples and the bootstrap.", 0, minimum=0)
    controls: bool = doc("Run the equal-budget controls beside GRASP's proposals (training/controls.py): "
                         "random_pick (as many random mixtures and selections, retrained alike, the same pick "
                         "rule) and filter_dedup (dedup + a quality filter whose share dev chooses). Off roughly "
                         "halves the loop's retrainings, and curation_test then cannot tell GRASP from them.", True)
    control_concentration: float = doc("random_pick's mixtures: Dirichlet(concentration × natural) draws, "
                                       "RegMix's proposal distribution.", 10.0, above=0)
    filter_shares: tuple[float, ...] = doc("filter_dedup: shares of each domain's highest reference-model losses "
                                           "dropped, one dev-retrained candidate each (the pick rule chooses).",
                                           (0.0, 0.1, 0.2, 0.3), minimum=0, below=1, nonempty=True)
    near_duplicate_threshold: float = doc("filter_dedup: a pool example whose 16-character-shingle Jaccard with "
                                          "an earlier one reaches this is a near duplicate and dropped.", 0.5,
                                          above=0, maximum=1)
    grasp_filter_share: float = doc("GRASP's selections may not pick near duplicates nor this share of each "
                                    "domain's highest reference-model losses (filter_dedup's filter, one share "
                                    "fixed; 0 = near duplicates only, chosen on dev; negative = off, the "
                                    "surrogate alone chooses among every example).", 0.0, below=1)


@dataclass(frozen=True)
class TestParams(TrainingParams):
    """The held-out curation test: fresh seeds, test examples only (DESIGN §6). Its seeds must
    be ones no other stage uses; it is the last node of the graph and nothing reads its table."""

    __test__ = False  # not a pytest test class, despite the name

    init_seeds: tuple[int, ...] = doc("Initialisation seeds of the test retrainings (fresh: no other stage's).",
                                      (1001, 1002), minimum=0, nonempty=True)
    data_order_seeds: tuple[int, ...] = doc("Data-order seeds; every selection is retrained with every "
                                            "(initialisation, data order) pair.", (2001, 2002), minimum=0,
                                            nonempty=True)
    random_seeds: tuple[int, ...] = doc("Seeds of the random reference selections at the selection budget "
                                        "(at least 20: gains over random are judged against their spread; "
                                        "distinct from selection.random_seeds).", tuple(range(100, 120)),
                                        minimum=0)
    data_multiplier: float = doc("`grasp` is also compared with the mean of multiplier_draws random selections at "
                                 "this multiple of the budget (DsDm's data multiplier); 0 = none.", 1.5, minimum=0)
    multiplier_draws: int = doc("Random selections at data_multiplier × the budget.", 5, minimum=1)
    mixture_samples: int = doc("Samples drawn from every mixture; sample j trains with seed pair j mod pairs "
                               "and is paired with the natural mixture's sample j.", 10, minimum=1)
    mixture_seed: int = doc("Seed of the mixture samples (sample j draws from seed + j).", 300, minimum=0)
    bootstrap: int = doc("Bootstrap resamples of the gain intervals.", 2000, minimum=10)
    bootstrap_seed: int = doc("Seed of the bootstrap.", 0, minimum=0)
    level: float = doc("Confidence level of the intervals.", 0.95, above=0, below=1)


@dataclass(frozen=True)
class TargetParams(TrainingParams):
    """The target check: the proxy's picks retrained with a target recipe (bigger model and/or more
    steps) on fresh seeds and scored on `test`."""

    workload: str = doc("Overrides of the workload's settings for the target model, as a JSON object, e.g. "
                        "'{\"order\": 3}' or '{\"name\": \"byte_transformer\"}' ('{}' = the proxy's).",
                        '{"order": 3}')
    steps_factor: int = doc("The target recipe trains this many times the proxy recipe's steps.", 2, minimum=1)
    batch_size: int = doc("Target batch size (0 = the proxy recipe's).", 0, minimum=0)
    spread_mixtures: int = doc("Spread-out Dirichlet mixtures added to the candidates (beside every stored "
                               "mixture), so the rank agreement covers more than near-natural mixes.", 2, minimum=0)
    spread_concentration: float = doc("Their Dirichlet concentration (1 = uniform over the simplex).", 1.0, above=0)
    samples: int = doc("Samples retrained per mixture candidate at each level.", 2, minimum=1)
    gain_samples: int = doc("Samples retrained of the `grasp` and `natural` mixtures at each level (at least "
                            "`samples`): their paired gain's interval resamples these pairs.", 8, minimum=1)
    random_seeds: tuple[int, ...] = doc("Random reference selections at the selection budget.",
                                        (1100, 1101, 1102), minimum=0, nonempty=True)
    init_seed: int = doc("Initialisation seed of both levels' retrainings (fresh).", 3001, minimum=0)
    data_order_seeds: tuple[int, ...] = doc("Data-order seeds (fresh).", (4001, 4002), minimum=0, nonempty=True)
    bootstrap: int = doc("Bootstrap resamples of the intervals.", 1000, minimum=10)
    seed: int = doc("Seed of the spread mixtures, the samples and the bootstrap.", 0, minimum=0)


@dataclass(frozen=True)
class ExportParams:
    """What `trainer_export` / `grasp export` writes for trainers (grasp_pipeline/ops/export.py)."""

    destination: str = doc("Folder or object-store URI the trainer files go to; empty = `exports` under the "
                           "storage root.", "")
    megatron_prefix: str = doc("Data-path prefix in the Megatron-style blend string: {domain} is replaced by the "
                               "domain name (e.g. /data/{domain}_text_document: one prefix per domain); with "
                               "{source}, one prefix per corpus file of the domain, its path under the corpus root "
                               "without extensions (e.g. /data/tok/{source}_text_document), the domain's weight "
                               "split over its files by their bytes.", "{domain}")
    methods: tuple[str, ...] = doc("Selection and mixture methods to export (empty = every method).", ())
    training_bytes: int = doc("Training run size each mixture's `olmix` form states (max_tokens, in bytes for "
                              "byte workloads) and repetition factors are counted at: domain weight × this ÷ the "
                              "domain's bytes in the whole corpus; 0 = loop.training_bytes (the run the mixers "
                              "were capped for), or the whole corpus once when that is 0 too.", 0, minimum=0)


@dataclass(frozen=True)
class MaintenanceParams:
    """Table maintenance (`grasp_maintain` / `grasp maintain`, grasp_pipeline/ops/maintenance.py)."""

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
                SelectionParams, MixtureParams, MixtureUpdateParams, LoopParams, ValidationParams, TestParams,
                TargetParams, ExportParams, MaintenanceParams)


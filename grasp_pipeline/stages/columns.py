"""What every column of every table means: the one source of the column descriptions the Dagster
catalog shows (assets/catalog.py) next to the types of the table contract (infra/storage.py).

`TABLE_COLUMNS` lists each table's columns, in the order the stage writes them, with a description;
a column that means the same in several tables is described once, in `SHARED`, and named there by
`None`. A test keeps this in step with the tables a whole run writes.
"""

from __future__ import annotations

SHARED: dict[str, str] = {
    "example_id": "Pool example id (corpus_shards.example_id).",
    "shard": "Corpus shard (a Dagster partition of corpus_shards and gradient_sketches).",
    "domain": "The example's domain (a mixture weights domains).",
    "text": "The example's text (UTF-8).",
    "n_bytes": "UTF-8 bytes of the text.",
    "source": "The corpus file the document came from.",
    "content_sha1": "SHA-1 of the text (near-duplicate and change detection).",
    "doc_id": "Id of the document the example was cut from.",
    "offset": "Byte offset of the example in its document's UTF-8 text.",
    "dirt": "Labelled kind of dirt of the embedded corpus (clean, …); read by evaluation only, never by a stage.",
    "dirt_source": "For a labelled copy: the example id of the clean example it copies.",
    "build_id": "Id of the corpus build that wrote the row.",
    "task": "Task name (a domain's dev or test examples); `all` = mean over tasks.",
    "split": "dev (what curation may look at) or test (the held-out proof).",
    "model_version": "Reference model version the sketch was taken from.",
    "sketch": "Projected gradient sketch (one block of k per reference checkpoint).",
    "loss": "Loss in nats per unit (byte, token or image) of the workload.",
    "seconds": "Wall seconds spent on the row.",
    "sketch_config": "JSON of the sketch settings (projector, k, checkpoints).",
    "subset_id": "Planned subset id (subset_plan.subset_id).",
    "role": "fit (the surrogate is fitted on it) or holdout (it is judged on it).",
    "sampler": "How the subset was drawn: uniform, dirichlet or stratified.",
    "size": "Examples in the subset.",
    "members": "Pool example ids of the subset.",
    "batch": "Retraining batch (a Dagster partition of subset_outcomes).",
    "utility": "−loss on the task's examples (higher is better).",
    "recipe": "JSON of the retraining recipe (steps, seeds, optimiser).",
    "members_sha1": "SHA-1 of the sorted members (matches an outcome to its subset).",
    "surrogate_id": "Surrogate fit id (a hash of its settings and inputs).",
    "method": "Surrogate, selection or mixture method.",
    "config": "JSON of the candidate configuration (regularisation, rank…).",
    "cv_mean": "Mean cross-validated score of the configuration.",
    "cv_lcb": "Lower confidence bound of the cross-validated score (what picks the configuration).",
    "holdout_spearman": "Spearman ρ of predicted vs retrained utility on the holdout subsets.",
    "holdout_pearson": "Pearson r of predicted vs retrained utility on the holdout subsets.",
    "artifact_seconds": "Seconds to build the surrogate's artifact.",
    "selection_id": "Selection id (curated_selections.selection_id; test-random-* are the test's references).",
    "mixture_id": "Mixture id (mixture_weights.mixture_id).",
    "weight": "Domain weight of the mixture (a mixture's weights sum to 1).",
    "predicted_utility": "Surrogate-predicted task-weighted utility of the mixture at the selection budget.",
    "budget": "Examples a selection (or a mixture's sample) holds.",
    "kind": "What the row is (see the table's description).",
    "reference": "What the gain is measured against.",
    "gain": "Gain in utility (−loss, nats per unit) over the reference.",
    "ci_low": "Lower end of the 95% bootstrap interval.",
    "ci_high": "Upper end of the 95% bootstrap interval.",
    "seeds": "Retraining seeds (initialisation × data order) per model.",
    "chosen": "Whether this candidate was chosen.",
}

_VERDICT = {"split": None, "kind": "gain (over random or natural) or difference (method − reference).",
            "method": None, "reference": "random, mixture-natural, or the other side of a difference.",
            "gain": None, "ci_low": None, "ci_high": None, "p_value": "p under the right null (evaluation/null.py).",
            "null_percentile": "Percentile of the method among the random draws.",
            "excludes_zero": "Whether the interval excludes zero.", "draws": "Draws or samples behind the figure.",
            "candidates": "Candidates the pick chose among.", "dev_retrainings": "Dev retrainings its procedure spent.",
            "seeds": None, "tasks": "Tasks averaged over.", "level": "Coverage of the interval (0.95)."}
_MIXTURE = {"mixture_id": None, "method": None, "domain": None, "weight": None, "predicted_utility": None}

TABLE_COLUMNS: dict[str, dict[str, str | None]] = {
    "corpus_shards": {c: None for c in ("example_id", "shard", "domain", "text", "n_bytes", "source", "content_sha1",
                                        "doc_id", "offset", "dirt", "dirt_source", "build_id")}
                      | {"domain_documents": "Documents of this example's domain in the whole corpus (before the split "
                                             "and the pool cap).",
                         "domain_examples": "Examples cut from this domain's whole corpus (before the split and cap).",
                         "domain_bytes": "UTF-8 bytes of those examples.",
                         "domain_natural": "The domain's weight in the natural mixture (corpus.natural: its share of "
                                           "the corpus's examples, or of the pool's)."},
    "corpus_sources": {"domain": None, "source": "The corpus file (its path under the corpus root), or the records' "
                                                "own `source` field where they carry one.",
                       "documents": "Documents of this domain in that source.", "examples": "Examples cut from them.",
                       "bytes": "UTF-8 bytes of those examples.", "build_id": None},
    "task_sets": {c: None for c in ("task", "split", "example_id", "domain", "doc_id", "text", "n_bytes",
                                    "content_sha1", "dirt", "dirt_source", "build_id")},
    "reference_models": {"model_version": "Version id of the reference model (a hash of recipe and corpus).",
                         "workload": "Workload name.", "parameters": "Trainable parameters.",
                         "warmup_loss": "Training loss at the end of the warm-up.", "recipe": None,
                         "state": "Files of the final state dict (step, file, sha256, bytes, tensors).",
                         "sketch_steps": "Steps whose checkpoints are sketched.",
                         "checkpoints": "Files of the sketched checkpoints.", "seconds": None,
                         "path": "Folder of the model's files under the root."},
    "gradient_sketches": {c: None for c in ("example_id", "shard", "domain", "build_id", "sketch")}
    | {"grad_norm": "Norm of the example's full gradient.", "loss": None, "seconds": None, "sketch_config": None,
       "model_version": None},
    "task_sketches": {c: None for c in ("task", "sketch", "loss", "seconds", "sketch_config", "model_version")},
    "subset_plan": {c: None for c in ("subset_id", "role", "sampler", "size")}
    | {"seed": "Seed the subset was drawn with.", "members": None, "batch": None},
    "subset_outcomes": {c: None for c in ("subset_id", "task", "loss", "utility")}
    | {"repeat": "Retraining repeat (another data order, for the noise ceiling).", "steps": "Training steps.",
       "seconds": None, "batch": None, "recipe": None, "members_sha1": None},
    "surrogates": {c: None for c in ("surrogate_id", "method", "task")}
    | {"params": "JSON of the fitted parameters.", "config": None, "cv_mean": None, "cv_lcb": None,
       "holdout_spearman": None, "holdout_pearson": None, "mlflow_run_id": "MLflow run of the fit.",
       "artifact_seconds": None, "model_version": "Reference model version of the sketches it was fitted on."},
    "surrogate_candidates": {c: None for c in ("surrogate_id", "method")}
    | {"candidate": "Candidate configuration number.", "config": None, "cv_mean": None,
       "cv_sd": "Standard deviation of the cross-validated score.", "cv_lcb": None, "chosen": None,
       "fold_scores": "JSON list of the score per fold."},
    "surrogate_predictions": {c: None for c in ("surrogate_id", "method", "subset_id", "task", "role", "sampler")}
    | {"predicted": "Surrogate-predicted utility.", "actual": "Retrained utility."},
    "fidelity_report": {c: None for c in ("method", "sampler")}
    | {"fit_subsets": "Subsets the surrogate was fitted on.", "holdout_spearman": None, "holdout_pearson": None,
       "surrogate_id": None, "noise_ceiling": "The best ρ any surrogate could reach (repeat reliability).",
       "artifact_seconds": None,
       "draws": "Seeded draws of the fit subsets behind the row (surrogate.fidelity_draws; 1 for the main fit); "
                "holdout_spearman is their median.",
       "holdout_spearman_min": "Lowest holdout ρ over the draws.", "holdout_spearman_max": "Highest over the draws."},
    "curation_rounds": {"candidate_id": "Candidate id.", "surrogate_id": None, "kind": "selection or mixture.",
                        "proposer": "Who proposed it: grasp, or a control such as random_pick.",
                        "retrainings": "Dev retrainings spent on it.", "round": "Loop round.",
                        "setting": "JSON of the proposal's setting.", "predicted_gain": "Surrogate-predicted gain.",
                        "realised_gain": "Retrained dev gain over random (mean over tasks, weighted by the target).",
                        "realised_per_task": "JSON of the retrained dev gain per task.",
                        "lcb": "Lower confidence bound of the predicted gain.",
                        "realised_lcb": "Lower confidence bound of the realised gain.", "chosen": None,
                        "pick_after_rounds": "Rounds after which it was the pick.", "budget": None,
                        "weights": "JSON of a mixture's domain weights.", "members": None,
                        "gains": "Per-example gains of a selection.",
                        "task_weights": "JSON of the target: each task's weight (loop.task_weights; missing ones 1).",
                        "training_bytes": "The run the mixtures are for (loop.training_bytes; 0 = unstated).",
                        "max_epochs": "Most passes over a domain's corpus bytes a mixture may ask for."},
    "active_outcomes": {c: None for c in ("subset_id", "sampler", "role", "size", "members", "task", "utility",
                                          "recipe", "model_version")}
    | {"dev_sha1": "SHA-1 of the dev examples it was scored on.", "members_sha1": None},
    "curated_selections": {c: None for c in ("selection_id", "method", "example_id")}
    | {"rank": "Pick order.", "gain": "Marginal predicted gain when picked.", "domain": None, "budget": None},
    "mixture_weights": _MIXTURE | {"own_predicted_utility": "Utility its own method predicts for it.",
                                   "budget": None},
    "mixture_updates": _MIXTURE | {"budget": None, "new_domains": "Domains new since the last mixture.",
                                   "revised_domains": "Domains whose examples changed.",
                                   "sketched_examples": "Examples sketched for the update.", "seconds": None},
    "selection_validation": {c: None for c in ("selection_id", "method", "task", "loss", "utility", "budget")}
    | {"repeats": "Retrainings averaged (the recipe's seeds; a mixture's: its samples)."},
    "validation_verdict": _VERDICT,
    "curation_test": {c: None for c in ("selection_id", "method")}
    | {"kind": "selection, mixture or random_reference.", "task": None, "utility": "Held-out test utility.",
       "loss": None, "gain_vs_reference": "Gain over the reference (mean of the random references, or natural).",
       "ci_low": None, "ci_high": None, "reference": None, "seeds": None,
       "percentile": "Percentile among the random references.",
       "floor_utility": "Utility of the composition-only floor (a per-domain unigram of the training subset).",
       "tasks_ahead": "Tasks on which it beats the reference.", "sign_test_p": "Sign-test p over tasks.",
       "budget": None},
    "curation_test_verdict": _VERDICT,
    "curation_test_dirt": {"selection_id": None, "method": None, "kind": "Kind of labelled dirt.",
                           "share": "Share of the selection that is this dirt.",
                           "random_share": "Mean share in the random references."},
    "target_check": {"candidate": "Candidate (selection or mixture).", "kind": "selection or mixture.",
                     "level": "proxy or target (the recipe it was retrained with).", "utility": "Test utility."},
    "target_check_summary": {"figure": "Name of the figure.", "value": "Its value.", "ci_low": None,
                             "ci_high": None},
    "lineage": {"table": "Table written.", "version": "Its Delta version.", "asset": "Asset (stage) that wrote it.",
                "dagster_run_id": "Dagster run.", "mlflow_run_id": "MLflow run.",
                "code_version": "Code version of the asset.", "reads": "JSON {table: version} it read.",
                "params": "JSON of the stage's settings.", "facts": "JSON of facts about the inputs (corpus hash…).",
                "recorded_at": "Unix seconds of the commit."},
}


def column_description(table: str, column: str) -> str:
    """The description of `table`.`column` ("" for a column this module does not list)."""
    described = TABLE_COLUMNS.get(table, {})
    if column not in described:
        return ""
    return described[column] or SHARED[column]

"""The held-out proof: a dev/test split nothing upstream reads, a stratified sampler, the curation
test's statistics, and a curation_test table that nothing reads."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import numpy as np
import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.corpus import CorpusError, cut_examples, example_id, load_documents, max_jaccard, split_and_report
from grasp_pipeline.evaluation.held_out import (
    composition_floor,
    paired_gains,
    selection_gains,
    sign_test,
    unit_histograms,
)
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.training.plan import natural_counts, sample_subset_plan

from .conftest import build_tables_until, tiny_params


@pytest.fixture(scope="module")
def examples():
    documents, _ = load_documents(None)
    return cut_examples(documents, 128)


# ---------------------------------------------------------------- the split


DEMO = {"task_examples_per_domain": 96, "pool_examples_per_domain": 400, "shard_size": 256}  # the demo profile


@pytest.fixture(scope="module")
def demo_split(examples):
    return split_and_report(examples, seed=0, **DEMO)


def test_every_task_set_is_split_into_dev_and_test_without_overlap(demo_split):
    _, tasks, report = demo_split
    for _, group in tasks.group_by("task"):
        dev, test = group.filter(pl.col("split") == "dev"), group.filter(pl.col("split") == "test")
        assert test.height == round(0.5 * DEMO["task_examples_per_domain"])
        assert 0 < dev.height <= DEMO["task_examples_per_domain"] - test.height  # the guard may drop dev pieces
        assert not set(dev["example_id"]) & set(test["example_id"])
        assert not set(dev["content_sha1"]) & set(test["content_sha1"])
    assert tasks.height == tasks["task"].n_unique() * DEMO["task_examples_per_domain"] - report.dev_dropped


def test_a_document_belongs_to_one_of_test_dev_and_pool(demo_split):
    pool, tasks, report = demo_split
    test, dev = (set(tasks.filter(pl.col("split") == side)["doc_id"]) for side in ("test", "dev"))
    assert test and dev
    assert not test & dev and not test & set(pool["doc_id"]) and not dev & set(pool["doc_id"])
    assert (report.test_documents, report.dev_documents) == (len(test), len(dev))


def test_no_example_of_one_role_is_a_near_duplicate_of_another_roles(demo_split):
    pool, tasks, report = demo_split
    texts = {side: tasks.filter(pl.col("split") == side)["text"].to_list() for side in ("test", "dev")}
    texts["pool"] = pool["text"].to_list()
    for a, b in [("test", "pool"), ("test", "dev"), ("dev", "pool")]:
        highest = max_jaccard(texts[a], texts[b])[0].max()
        assert highest < 0.5  # corpus.near_duplicate_threshold's default
        assert getattr(report, f"max_jaccard_{a}_{b}") == pytest.approx(highest)


def test_a_planted_near_duplicate_of_a_test_example_is_dropped_from_the_pool_and_counted(examples, demo_split):
    demo_pool, tasks, report = demo_split
    test = tasks.filter((pl.col("split") == "test") & (pl.col("task") == "italian_literature")).row(5, named=True)
    text = test["text"][:60] + "###" + test["text"][63:]  # three characters changed
    assert max_jaccard([text], [test["text"]])[0][0] >= 0.5
    # its own document in another domain (a mislabelled copy), first in reading order: a pool document
    planted = pl.DataFrame([{**examples.row(0, named=True), "domain": "latin_hymns", "doc_id": "planted",
                             "example_id": example_id("latin_hymns", "planted", 0), "text": text,
                             "n_bytes": len(text.encode()), "content_sha1": hashlib.sha1(text.encode()).hexdigest()}],
                           schema=examples.schema)
    pool, tasks_again, planted_report = split_and_report(pl.concat([planted, examples]), seed=0, **DEMO)
    assert planted["example_id"][0] not in set(pool["example_id"])
    assert planted_report.pool_dropped == report.pool_dropped + 1
    assert tasks_again.equals(tasks)
    assert pool.equals(demo_pool)  # dropped before the pool sample: the pool keeps its size and its sample


def test_a_target_domain_gives_its_task_set_and_nothing_to_the_pool(examples, demo_split):
    pool, tasks, _ = split_and_report(examples, seed=0, target_domains=("python_source",), **DEMO)
    assert "python_source" not in set(pool["domain"]) and "python_source" in set(tasks["task"])
    _, all_tasks, _ = demo_split
    same = (tasks.filter(pl.col("task") == "python_source"), all_tasks.filter(pl.col("task") == "python_source"))
    assert same[0]["example_id"].to_list() == same[1]["example_id"].to_list()  # the same held-out text
    assert set(pool["domain"]) == set(demo_split[0]["domain"]) - {"python_source"}
    with pytest.raises(CorpusError, match=r"corpus.target_domains names \['klingon'\]"):
        split_and_report(examples, seed=0, target_domains=("klingon",), **DEMO)
    with pytest.raises(CorpusError, match="nothing is left to train on"):
        split_and_report(examples, seed=0, target_domains=tuple(sorted(set(examples["domain"]))), **DEMO)


def test_a_users_evaluation_files_are_targets_and_decontaminate_the_pool(tmp_path):
    """corpus.target_path: a user's evaluation documents, read like the corpus, give task sets and
    nothing to the pool, natural covers the corpus's domains, and a copy of the evaluation text filed
    in the corpus loses its held-out pieces from the pool; a domain in both is refused naming it."""
    from grasp_pipeline.config import CorpusParams
    from grasp_pipeline.stages.corpus_shards import split_corpus

    documents, _ = load_documents(None)
    kept = documents.filter(pl.col("domain").is_in(["latin_hymns", "python_docs", "german_literature"]))
    evaluation = documents.filter(pl.col("domain") == "python_source").with_columns(domain=pl.lit("my_eval"))
    copied = evaluation.tail(1).with_columns(domain=pl.lit("python_docs"), doc_id=pl.lit("copied"))
    (tmp_path / "corpus").mkdir()  # the copy first: the corpus's own held-out text is its domains' last documents
    pl.concat([copied, kept]).select("doc_id", "domain", "text").rename({"doc_id": "id"}) \
        .write_ndjson(tmp_path / "corpus" / "train.jsonl")
    evaluation.select("doc_id", "domain", "text").rename({"doc_id": "id"}).write_ndjson(tmp_path / "eval.jsonl")
    params = CorpusParams(corpus_path=str(tmp_path / "corpus"), target_path=str(tmp_path / "eval.jsonl"),
                          task_examples_per_domain=48, pool_examples_per_domain=0)
    pool, tasks, report, _, _, sources = split_corpus(params, 128)
    assert set(pool["domain"]) == {"latin_hymns", "python_docs", "german_literature"}
    assert set(tasks["task"]) == {"latin_hymns", "python_docs", "german_literature", "my_eval"}
    assert "my_eval" in set(sources["domain"]) and report.domains["my_eval"] == evaluation.height
    natural = pool.group_by("domain").agg(pl.col("domain_natural").first())["domain_natural"]
    assert natural.sum() == pytest.approx(1.0)
    held_out = set(tasks.filter(pl.col("task") == "my_eval")["content_sha1"])
    copy = cut_examples(copied, 128)
    assert held_out & set(copy["content_sha1"])  # the copy holds held-out evaluation text ...
    assert not held_out & set(pool["content_sha1"])  # ... which the pool does not
    assert 0 < pool.filter(pl.col("doc_id") == "copied").height < copy.height
    clash = CorpusParams(corpus_path=str(tmp_path / "corpus"), target_path=str(tmp_path / "corpus"))
    with pytest.raises(CorpusError, match=r"corpus.target_path has domain\(s\) \['german_literature', 'latin_hymns'"):
        split_corpus(clash, 128)


def test_the_split_is_seeded_and_the_seed_moves_only_the_pool_sample(examples, demo_split):
    pool, tasks, report = demo_split
    again = split_and_report(examples, seed=0, **DEMO)
    assert again[0].equals(pool) and again[1].equals(tasks) and again[2] == report
    other = split_and_report(examples, seed=1, **DEMO)
    assert other[1].equals(tasks) and not other[0].equals(pool)


def test_the_corpus_stage_reports_the_split(tmp_path):
    params = tiny_params().corpus
    result = stages.run_corpus_shards(DeltaStore(str(tmp_path)), params, 128)
    tasks = DeltaStore(str(tmp_path)).read("task_sets")
    assert result.metrics["split.test_documents"] == tasks.filter(pl.col("split") == "test")["doc_id"].n_unique()
    assert result.metrics["split.dev_documents"] == tasks.filter(pl.col("split") == "dev")["doc_id"].n_unique()
    for name in ["test_pool", "test_dev", "dev_pool"]:
        assert 0 <= result.metrics[f"split.max_jaccard_{name}"] < params.near_duplicate_threshold
    assert result.metrics["split.pool_dropped"] >= 0 and result.metrics["split.dev_dropped"] >= 0


def test_nothing_upstream_of_the_curation_test_reads_the_test_examples(tmp_path):
    """Scrambling every test example's text changes the curation test and nothing else."""
    clean = build_tables_until(tmp_path / "clean", "curation_test")
    scrambled = build_tables_until(tmp_path / "scrambled", "corpus_shards")
    tasks = scrambled.read("task_sets")
    rng = np.random.default_rng(0)
    shuffled = [text if split == "dev" else "".join(rng.permutation(list(text)))
                for text, split in zip(tasks["text"], tasks["split"])]
    scrambled.write("task_sets", tasks.with_columns(text=pl.Series(shuffled)))
    params = tiny_params()
    plan = stages.stage_plan(scrambled, params, params.workload.build())
    for _name, run in plan[1:]:
        run()
    volatile = {"seconds", "artifact_seconds", "recorded_at", "path", "mlflow_run_id"}
    for table in ["gradient_sketches", "task_sketches", "subset_outcomes", "surrogates", "surrogate_predictions",
                  "curated_selections", "mixture_weights", "selection_validation"]:
        keep = [c for c in clean.read(table).columns if c not in volatile]
        order = [c for c in keep if not isinstance(clean.read(table).schema[c], pl.List)]
        a, b = (store.read(table).select(keep).sort(order) for store in (clean, scrambled))
        assert a.equals(b), table
    assert not clean.read("curation_test")["utility"].equals(scrambled.read("curation_test")["utility"])


def test_no_stage_reads_the_curation_test_table(tmp_path):
    store = DeltaStore(str(tmp_path))
    params = tiny_params()
    reads = {}
    for name, run in stages.stage_plan(store, params, params.workload.build()):
        reads[name] = run().reads
    assert set(reads["curation_test"]) >= {"curated_selections", "mixture_weights", "task_sets"}
    assert [name for name, tables in reads.items() if "curation_test" in tables] == []


def test_curation_test_is_the_last_node_of_the_graph():
    from assets.definitions import defs

    graph = defs.resolve_asset_graph()
    target = {dg.AssetKey("target_check"), dg.AssetKey("target_check_summary")}
    assert graph.get(dg.AssetKey("curation_test")).child_keys == target  # only ordering: it does not read it
    # their tables are read by nothing either
    for key in [dg.AssetKey("curation_test_dirt"), dg.AssetKey("curation_test_verdict"), *target]:
        assert graph.get(key).child_keys == set(), key


# ---------------------------------------------------------------- the stratified sampler


def test_stratified_subsets_hold_exactly_the_natural_per_domain_counts():
    pool = pl.DataFrame({"example_id": np.arange(100, dtype=np.int64),
                         "domain": ["a"] * 50 + ["b"] * 30 + ["c"] * 20})
    params = tiny_params().plan
    plan = sample_subset_plan(pool, params).filter(pl.col("sampler") == "stratified")
    assert plan.height == params.stratified_fit + params.stratified_holdout
    expected = dict(zip("abc", natural_counts(np.array([50, 30, 20]), round(params.uniform_fraction * 100))))
    domain_of = dict(zip(pool["example_id"], pool["domain"]))
    members = plan["members"].to_list()
    for ids in members:
        counts = {d: sum(domain_of[i] == d for i in ids) for d in "abc"}
        assert counts == expected
    assert len({tuple(ids) for ids in members}) == len(members)  # only the examples differ


def test_natural_counts_sum_to_the_total_by_largest_remainder():
    assert natural_counts(np.array([1, 1, 1]), 2).tolist() == [1, 1, 0]
    assert natural_counts(np.array([5, 3, 2]), 7).sum() == 7


def test_holdout_subsets_are_retrained_holdout_repeats_times_and_fit_subsets_repeats_times(tmp_path):
    params = tiny_params(retrain={"repeats": 1, "holdout_repeats": 2})
    store = build_tables_until(tmp_path, "subset_outcomes", params)
    counts = (store.read("subset_outcomes").group_by("subset_id").agg(pl.col("repeat").n_unique())
              .join(store.read("subset_plan").select("subset_id", "role"), on="subset_id"))
    assert set(counts.filter(pl.col("role") == "fit")["repeat"]) == {1}
    assert set(counts.filter(pl.col("role") == "holdout")["repeat"]) == {2}


# ---------------------------------------------------------------- statistics


def test_selection_gains_recover_a_planted_gain_with_an_interval_that_covers_it():
    rng = np.random.default_rng(0)
    seeds = rng.normal(0, 0.05, (4, 1))  # a seed effect shared by every selection (common random numbers)
    randoms = -3 + seeds + rng.normal(0, 0.01, (10, 4, 3))
    method = -3 + 0.02 + seeds[:, :] + rng.normal(0, 0.002, (4, 3))
    out = selection_gains(method, randoms, bootstrap=500, seed=0)
    assert np.all(np.abs(out["gain"] - 0.02) < 0.01)
    assert np.all((out["ci_low"] < out["gain"]) & (out["gain"] < out["ci_high"]))
    assert np.all(out["ci_low"] > 0)
    assert np.all(out["percentile"] == 1.0)
    null = selection_gains(randoms[0], randoms[1:], bootstrap=500, seed=0)
    assert null["mean_ci"][0] < 0.02  # no planted gain: the interval does not claim one


def test_paired_gains_pair_samples_row_by_row():
    reference = np.random.default_rng(1).normal(-3, 0.5, (10, 2))
    out = paired_gains(reference + 0.1, reference, bootstrap=200, seed=0)
    assert np.allclose(out["gain"], 0.1) and np.allclose(out["ci_low"], 0.1) and np.allclose(out["ci_high"], 0.1)


def test_sign_test_counts_tasks_ahead_and_ignores_ties():
    assert sign_test(np.array([0.1, 0.2, 0.3, -0.1, 0.0])) == (3, 0.625)
    ahead, p = sign_test(np.ones(9))
    assert ahead == 9 and p == pytest.approx(2 / 2 ** 9)


def test_the_composition_floor_is_the_per_domain_unigram_of_the_training_subset():
    units = [np.array([0, 0, 1]), np.array([1, 1]), np.array([2])]
    pool_hist = unit_histograms(units, 3)
    domains = np.array(["a", "a", "b"])
    test_hist = unit_histograms([np.array([0, 1]), np.array([2, 2])], 3)
    floor = composition_floor(pool_hist, domains, np.array([0, 1, 2]), test_hist, np.array([0, 1]), ["a", "b"],
                              smoothing=0.5)
    p_a = (np.array([2, 3, 0]) + 0.5) / 6.5  # domain a's unigram from rows 0 and 1
    p_b = (np.array([0, 0, 1]) + 0.5) / 2.5
    assert floor[0] == pytest.approx(-(np.log(p_a[0]) + np.log(p_a[1])) / 2)
    assert floor[1] == pytest.approx(-np.log(p_b[2]))


# ---------------------------------------------------------------- the curation test stage


def test_the_curation_test_refuses_seeds_the_recipe_already_uses(tmp_path):
    params = tiny_params()
    store = build_tables_until(tmp_path, "selection_validation", params)
    from dataclasses import replace

    with pytest.raises(ValueError, match="fresh"):
        stages.run_curation_test(store, params.workload.build(),
                                 replace(params.test, init_seeds=(params.retrain.init_seed, 1001)))
    with pytest.raises(ValueError, match="random_seeds ≥ 20"):
        stages.run_curation_test(store, params.workload.build(), replace(params.test, random_seeds=(100, 101)))
    with pytest.raises(ValueError, match="test.data_multiplier = 100: .* more than the pool's"):
        stages.run_curation_test(store, params.workload.build(), replace(params.test, data_multiplier=100.0))
    assert not store.exists("curation_test")


def test_the_curation_test_writes_every_selection_and_mixture_with_intervals(tmp_path):
    params = tiny_params()
    store = build_tables_until(tmp_path, "curation_test", params)
    test = store.read("curation_test")
    selections = set(store.read("curated_selections")["method"])
    assert selections | {"mixture-natural", "mixture-uniform", "mixture-grasp"} <= set(test["method"])
    assert test.filter(pl.col("kind") == "random_reference")["selection_id"].n_unique() == len(params.test.random_seeds)
    rows = test.filter(pl.col("kind") != "random_reference")
    assert (rows["ci_low"] <= rows["gain_vs_reference"] + 1e-12).all()
    assert (rows["gain_vs_reference"] <= rows["ci_high"] + 1e-12).all()
    natural = rows.filter(pl.col("method") == "mixture-natural")
    assert (natural["gain_vs_reference"] == 0).all()
    assert rows["floor_utility"].null_count() == 0
    assert set(test["seeds"].to_list()) == {len(params.test.init_seeds) * len(params.test.data_order_seeds),
                                            params.test.mixture_samples}


def test_the_verdict_holds_every_control_the_differences_and_equal_budgets_on_both_splits(tmp_path):
    params = tiny_params()
    store = build_tables_until(tmp_path, "curation_test", params)
    verdict = store.read("curation_test_verdict")
    gains = verdict.filter(pl.col("kind") == "gain")
    for method in ("grasp", "random_pick", "random_at_counts", "grasp_proposal", "filter_dedup", "datamodel",
                   "mixture-grasp", "mixture-regmix", "mixture-random_pick"):
        assert method in gains["method"].to_list(), method
    draws = dict(gains.select("method", "draws").iter_rows())
    assert draws["random_at_counts"] == params.selection.control_draws and draws["grasp"] == 1
    # the data multiplier: random corpus samples at 1.5 × the budget, their mean against grasp (test only)
    assert draws["random_x1.5"] == params.test.multiplier_draws
    differences = {(a, b) for a, b in verdict.filter(pl.col("kind") == "difference")
                   .select("method", "reference").iter_rows()}
    assert {("grasp", "random_pick"), ("grasp", "random_at_counts"), ("grasp", "filter_dedup"),
            ("grasp", "datamodel"), ("mixture-grasp", "mixture-regmix"),
            ("mixture-grasp", "mixture-random_pick"), ("grasp", "random_x1.5")} <= differences
    budget = dict(verdict.filter(pl.col("kind") == "gain").select("method", "dev_retrainings").iter_rows())
    candidates = dict(verdict.filter(pl.col("kind") == "gain").select("method", "candidates").iter_rows())
    assert budget["grasp"] == budget["random_pick"] > 0 and candidates["grasp"] == candidates["random_pick"] > 1
    assert (verdict["ci_low"] <= verdict["gain"] + 1e-12).all()
    assert (verdict["gain"] <= verdict["ci_high"] + 1e-12).all()
    assert set(verdict["tasks"]) == {store.read("task_sets")["task"].n_unique()}
    dev = store.read("validation_verdict")  # the dev mirror: the same comparisons, the recipe's seeds
    assert set(dev["split"]) == {"dev"} and set(verdict["split"]) == {"test"}
    # mixtures on dev: validation.mixture_samples paired samples each, even with one selection repeat
    assert params.validation.repeats == 1 and "mixture-grasp" in dev.filter(pl.col("kind") == "gain")["method"]
    validated = store.read("selection_validation").filter(pl.col("method").str.starts_with("mixture-"))
    assert set(validated["repeats"]) == {params.validation.mixture_samples}
    dev_pairs = {(a, b) for a, b in dev.filter(pl.col("kind") == "difference")
                 .select("method", "reference").iter_rows()}
    test_only = {"random_x1.5"}  # the data multiplier is measured on test alone
    assert {p for p in differences if not p[0].startswith("mixture-") and p[1] not in test_only} <= dev_pairs


# ---------------------------------------------------------------- the target check


def test_a_target_recipe_equal_to_the_proxy_agrees_perfectly_and_another_does_not(tmp_path):
    from dataclasses import replace

    params = tiny_params()
    store = build_tables_until(tmp_path, "curation_test", params)
    same = replace(params.target, workload="{}", steps_factor=1)
    stages.run_target_check(store, params.workload.build(), params.workload.build(), same)
    summary = dict(store.read("target_check_summary").select("figure", "value").iter_rows())
    assert summary["spearman_proxy_target"] == pytest.approx(1.0)
    wide = store.read("target_check").pivot(on="level", index=["candidate", "kind"], values="utility")
    assert (wide["proxy"] == wide["target"]).all()  # same recipe, same seeds: the same models
    stages.run_target_check(store, params.workload.build(), params.target_workload().build(), params.target)
    wide = store.read("target_check").pivot(on="level", index=["candidate", "kind"], values="utility")
    assert not (wide["proxy"] == wide["target"]).any()
    assert wide.filter(pl.col("kind") == "mixture").height >= 6


def test_the_target_checks_grasp_mixture_is_paired_with_natural_sample_by_sample(tmp_path):
    from dataclasses import replace

    params = tiny_params()
    store = build_tables_until(tmp_path, "curation_test", params)
    weights = store.read("mixture_weights")
    natural = dict(weights.filter(pl.col("method") == "natural").select("domain", "weight").iter_rows())
    # a grasp mixture equal to natural must show no gain at all: same samples, same seeds
    store.write("mixture_weights", weights.with_columns(
        pl.when(pl.col("method") == "grasp").then(pl.col("domain").replace_strict(natural))
        .otherwise(pl.col("weight")).alias("weight")))
    check = replace(params.target, samples=1, gain_samples=3)
    stages.run_target_check(store, params.workload.build(), params.target_workload().build(), check)
    summary = {row["figure"]: row for row in store.read("target_check_summary").iter_rows(named=True)}
    gain = summary["mixture_grasp_minus_natural_at_target"]
    assert (gain["value"], gain["ci_low"], gain["ci_high"]) == (0.0, 0.0, 0.0)
    assert summary["mixture_candidates"]["value"] == weights["method"].n_unique() + check.spread_mixtures


def test_a_target_only_domain_is_curated_for_and_judged_on_without_training_on_it(tmp_path):
    """corpus.target_domains + loop.task_weights on it alone: the whole graph runs; the pool, every
    selection and every mixture leave the target domain out; the verdicts are the target task's."""
    target = "python_source"
    domains = sorted(set(build_tables_until(tmp_path / "plain", "corpus_shards").read("task_sets")["task"]))
    weights = {d: (1.0 if d == target else 0.0) for d in domains}
    params = tiny_params(corpus={"target_domains": [target]}, loop={"task_weights": weights})
    store = build_tables_until(tmp_path / "target", "curation_test", params)
    assert target not in set(store.read("corpus_shards")["domain"]) and target in set(store.read("task_sets")["task"])
    assert target in set(store.read("task_sketches")["task"])
    assert target not in set(store.read("mixture_weights")["domain"])
    pool = set(store.read("corpus_shards")["example_id"])
    assert set(store.read("curated_selections")["example_id"]) <= pool
    rounds = store.read("curation_rounds")
    assert json.loads(rounds["task_weights"][0])[target] == 1.0
    # the verdicts judge the target: gains are the target task's alone
    test = store.read("curation_test").filter(pl.col("method") == "grasp")
    verdict = store.read("curation_test_verdict").filter((pl.col("method") == "grasp") &
                                                         (pl.col("reference") == "random"))
    mine = test.filter(pl.col("task") == target)["gain_vs_reference"]
    assert verdict.height == 1 and verdict["gain"][0] == pytest.approx(mine.mean(), abs=1e-9)


@pytest.mark.parametrize("name", ["code.toml", "heldout.toml"])
def test_the_documented_target_profiles_load_and_name_the_demo_corpus_tasks(name):
    from pathlib import Path

    from grasp_pipeline.config.profiles import load_params

    params = load_params("demo", Path(__file__).parents[1] / "docs" / "targets" / name)
    documents, _ = load_documents(None)
    domains = set(documents["domain"])
    assert params.loop.task_weights and set(params.loop.task_weights) <= domains
    assert set(params.corpus.target_domains) <= domains

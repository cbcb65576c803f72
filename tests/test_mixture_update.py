"""mixture_update: a changed domain set re-optimises the mixture from stored sketches, sketching only
new and revised domains, with no refit; a few dev retrainings pick between candidates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.config import MixtureUpdateParams
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.mixture import domain_stats, natural_mixture, optimise_mixture
from grasp_pipeline.stages.mixture_update import (
    DevCheck,
    dev_check,
    domain_update,
    refit_prior_tasks,
    reused_mixture,
    stored_mixture,
    update_candidates,
)
from grasp_pipeline.stages.mixture_weights import mixture_problem
from grasp_pipeline.stages.tables import outcome_recipe, pool_sketches, sketch_matrix, target_weights
from grasp_pipeline.surrogates import grasp_subset_utility
from tests.conftest import tiny_params, write_user_corpus

OLD_DOMAINS = ("news", "code", "poetry")
OLD_SOURCES = ("english_literature", "python_source", "german_literature")
# stages up to the mixture, without the closed loop and curation (the update needs only the surrogate)
UNTIL_MIXTURE = ("corpus_shards", "reference_model", "gradient_sketches", "task_sketches", "subset_plan",
                 "subset_outcomes", "surrogates", "mixture_weights")


def run_stages(store: DeltaStore, params, names) -> None:
    for name, run in stages.stage_plan(store, params, params.workload.build()):
        if name in names:
            run()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(folder, store, params) of a root built up to the mixture on a three-domain corpus."""
    folder = tmp_path_factory.mktemp("mixture_update")
    corpus = write_user_corpus(folder / "old.jsonl", OLD_DOMAINS, source_domains=OLD_SOURCES)
    # the sketch-only update (no dev check) unless a test asks for the check: the tests below are about sketching
    params = tiny_params(corpus={"corpus_path": str(corpus)}, mixture_update={"check_samples": 0})
    store = DeltaStore(str(folder / "root"))
    run_stages(store, params, UNTIL_MIXTURE)
    return folder, store, params


def corpus_params(params, path):
    return replace(params.corpus, corpus_path=str(path))


def update(store, params, path):
    workload = params.workload.build()
    result = stages.run_mixture_update(store, workload, corpus_params(params, path), params.workload.example_bytes,
                                       params.mixture, params.mixture_update)
    return result, store.read("mixture_updates", version=result.writes[0].version)


def _added(folder, name):
    """A corpus of the three old domains plus a new one, `hymns`."""
    return write_user_corpus(folder / name, OLD_DOMAINS + ("hymns",), source_domains=OLD_SOURCES + ("latin_hymns",))


def built_pool(folder, params, path) -> pl.DataFrame:
    """corpus_shards as run_corpus_shards writes them for `path` (a root of its own)."""
    store = DeltaStore(str(folder / f"corpus-of-{path.stem}"))
    stages.run_corpus_shards(store, corpus_params(params, path), params.workload.example_bytes)
    return store.read("corpus_shards")


def test_only_the_new_domains_examples_are_sketched(stored):
    folder, store, params = stored
    added = _added(folder, "added.jsonl")
    result, table = update(store, params, added)
    hymns = built_pool(folder, params, added).filter(pl.col("domain") == "hymns").height
    assert hymns > 0
    assert table["sketched_examples"].unique().to_list() == [hymns]
    assert table["new_domains"][0].to_list() == ["hymns"] and table["revised_domains"][0].to_list() == []
    assert sorted(table["domain"].to_list()) == sorted(OLD_DOMAINS + ("hymns",))
    assert table["weight"].sum() == pytest.approx(1.0)
    assert result.metrics["retrained_models"] == 0


def test_unchanged_domains_keep_exactly_their_stored_statistics(stored):
    folder, store, params = stored
    added = _added(folder, "added2.jsonl")
    got = domain_update(store, params.workload.build(), corpus_params(params, added), params.workload.example_bytes,
                        MixtureUpdateParams())
    sketches = pool_sketches(store)
    want = domain_stats(sketch_matrix(sketches["sketch"]), sketches["domain"].to_numpy())
    for d, domain in enumerate(want.domains):
        mine = got.stats.domains.index(domain)
        assert got.stats.counts[mine] == want.counts[d]
        assert np.array_equal(got.stats.means[mine], want.means[d])
        assert np.array_equal(got.stats.variances[mine], want.variances[d])


def test_a_task_the_fit_never_saw_gets_the_fitted_tasks_mean_params(stored):
    import json

    folder, store, params = stored
    added = _added(folder, "added4.jsonl")
    got = domain_update(store, params.workload.build(), corpus_params(params, added), params.workload.example_bytes,
                        MixtureUpdateParams(new_task_prior="mean"))
    fitted = [json.loads(p) for p in store.read("surrogates").filter(pl.col("method") == "grasp")["params"]]
    prior = got.grasp_params[got.tasks.index("hymns")]
    assert got.prior_tasks == ["hymns"]
    assert prior["b"] == pytest.approx(np.mean([p["b"] for p in fitted]))
    assert prior["penalty"] == pytest.approx(np.mean([p["penalty"] for p in fitted], axis=0).tolist())
    assert got.grasp_params[got.tasks.index("news")] == next(
        json.loads(r["params"]) for r in store.read("surrogates").iter_rows(named=True)
        if r["method"] == "grasp" and r["task"] == "news")


def test_an_unchanged_corpus_reproduces_the_stored_grasp_optimum(stored):
    folder, store, params = stored
    _, table = update(store, params, folder / "old.jsonl")
    optimum = store.read("mixture_weights").filter(pl.col("method") == "grasp_optimum").sort("domain")
    table = table.sort("domain")
    assert table["domain"].to_list() == optimum["domain"].to_list()
    assert np.array_equal(table["weight"].to_numpy(), optimum["weight"].to_numpy())
    assert table["predicted_utility"][0] == optimum["predicted_utility"][0]
    assert table["sketched_examples"][0] == 0 and table["sketched_task_examples"][0] == 0


def test_a_revised_domain_is_sketched_again(stored):
    folder, store, params = stored
    revised = write_user_corpus(folder / "revised.jsonl", OLD_DOMAINS,
                                source_domains=("english_literature", "python_source", "french_literature"))
    _, table = update(store, params, revised)
    poetry = built_pool(folder, params, revised).filter(pl.col("domain") == "poetry").height
    assert table["revised_domains"][0].to_list() == ["poetry"] and table["new_domains"][0].to_list() == []
    assert table["sketched_examples"][0] == poetry
    assert table["prior_tasks"][0].to_list() == []  # a revised task keeps its fitted params


def test_a_removed_domain_is_dropped_from_the_mixture(stored):
    folder, store, params = stored
    fewer = write_user_corpus(folder / "fewer.jsonl", OLD_DOMAINS[:2], source_domains=OLD_SOURCES[:2])
    _, table = update(store, params, fewer)
    assert sorted(table["domain"].to_list()) == sorted(OLD_DOMAINS[:2])
    assert table["removed_domains"][0].to_list() == ["poetry"] and table["sketched_examples"][0] == 0


def test_a_root_without_a_surrogate_is_refused_naming_what_is_missing(tmp_path):
    corpus = write_user_corpus(tmp_path / "old.jsonl", OLD_DOMAINS, source_domains=OLD_SOURCES)
    params = tiny_params(corpus={"corpus_path": str(corpus)})
    store = DeltaStore(str(tmp_path / "root"))
    run_stages(store, params, ("corpus_shards", "reference_model", "gradient_sketches", "task_sketches"))
    with pytest.raises(ValueError, match="no surrogates, subset_outcomes table; materialise subset_outcomes, "
                                         "surrogates first"):
        update(store, params, corpus)


def test_the_dev_check_retrains_every_candidate_and_writes_the_best_dev_gain(stored):
    folder, store, params = stored
    added = _added(folder, "added5.jsonl")
    checked = replace(params, mixture_update=replace(params.mixture_update, check_samples=2, refit_new_tasks=False))
    result, table = update(store, checked, added)
    first = table.row(0, named=True)
    names, gains = first["candidates"], first["candidate_dev_gains"]
    assert names == ["natural", "reuse", "step_0.5", "optimum"] and gains[0] == 0.0
    assert first["candidate"] == names[int(np.argmax(gains))]
    assert first["retrained_models"] == 2 * len(names) == result.metrics["retrained_models"]
    assert first["retrain_seconds"] > 0
    # the weights written are the picked candidate's, rebuilt from the same stored tables
    got = domain_update(store, params.workload.build(), corpus_params(params, added), params.workload.example_bytes,
                        checked.mixture_update)
    objective, _, caps, _ = mixture_problem(got.stats, got.task_sketch, got.grasp_params,
                                            target_weights(store, got.tasks), params.mixture)
    candidates = update_candidates(got, optimise_mixture(objective, caps), stored_mixture(store),
                                   checked.mixture_update)
    assert list(candidates) == names
    weights = dict(zip(table["domain"], table["weight"]))
    np.testing.assert_allclose([weights[d] for d in got.stats.domains], candidates[first["candidate"]], rtol=1e-12)


def test_a_new_tasks_alignment_and_intercept_are_refitted_from_the_checks_samples(stored):
    """refit_prior_tasks recovers a new task's b and intercept from utilities its params generate on the
    check's samples (the prior's penalty kept); fitted tasks keep their params; a negative fit gives b = 0."""
    folder, store, params = stored
    got = domain_update(store, params.workload.build(), corpus_params(params, _added(folder, "added7.jsonl")),
                        params.workload.example_bytes, params.mixture_update)
    t = got.tasks.index("hymns")
    rng = np.random.default_rng(0)
    domains = got.pool["domain"].to_numpy()
    subsets = [[rng.choice(len(domains), size=40, replace=False) for _ in range(3)] for _ in range(4)]
    sums = np.stack([got.pool_sketch[r].sum(0) for per in subsets for r in per])
    truth = {**got.grasp_params[t], "b": 3.0 * got.grasp_params[t]["b"] + 1.0, "intercept": -2.5}
    utility = np.zeros((12, len(got.tasks)))
    utility[:, t] = grasp_subset_utility(truth, sums, np.full(12, 40), got.task_sketch[t])
    check = DevCheck("natural", ["a", "b", "c", "d"], [0.0] * 4, 12, 1.0, subsets, utility.reshape(4, 3, -1))
    refitted = refit_prior_tasks(got, check)
    assert refitted[t]["b"] == pytest.approx(truth["b"], rel=1e-6)
    assert refitted[t]["intercept"] == pytest.approx(-2.5, rel=1e-6)
    assert refitted[t]["penalty"] == got.grasp_params[t]["penalty"]
    assert all(refitted[i] == got.grasp_params[i] for i in range(len(got.tasks)) if i != t)
    utility[:, t] = -utility[:, t]  # utility falling with alignment: the bound's sign gives no alignment
    assert refit_prior_tasks(got, DevCheck("natural", [], [], 12, 1.0, subsets, utility.reshape(4, 3, -1)))[t]["b"] == 0


def test_the_refit_optimum_is_checked_after_the_first_candidates(stored):
    folder, store, params = stored
    checked = replace(params, mixture_update=replace(params.mixture_update, check_samples=2, refit_new_tasks=True))
    result, table = update(store, checked, _added(folder, "added8.jsonl"))
    first = table.row(0, named=True)
    assert first["candidates"] == ["natural", "reuse", "step_0.5", "optimum", "refit_optimum"]
    assert first["retrained_models"] == 2 * 5 == result.metrics["retrained_models"]
    assert first["candidate"] == first["candidates"][int(np.argmax(first["candidate_dev_gains"]))]
    # an unchanged corpus has no new task: nothing to refit, no fifth candidate
    _, same = update(store, checked, folder / "old.jsonl")
    assert "refit_optimum" not in same["candidates"][0]


def test_the_stored_mixture_carried_over_keeps_its_ratios_and_gives_new_domains_their_natural_share(stored):
    folder, store, params = stored
    got = domain_update(store, params.workload.build(), corpus_params(params, _added(folder, "added6.jsonl")),
                        params.workload.example_bytes, params.mixture_update)
    stored_pi = stored_mixture(store)
    natural = natural_mixture(got.stats)
    carried = dict(zip(got.stats.domains, reused_mixture(got, stored_pi)))
    assert carried["hymns"] == pytest.approx(natural[got.stats.domains.index("hymns")])
    assert sum(carried.values()) == pytest.approx(1.0)
    for a, b in zip(OLD_DOMAINS, OLD_DOMAINS[1:]):
        if stored_pi[b] > 0:
            assert carried[a] / carried[b] == pytest.approx(stored_pi[a] / stored_pi[b])


def test_the_dev_check_prefers_natural_to_a_mixture_of_one_domain(stored):
    folder, store, params = stored
    got = domain_update(store, params.workload.build(), corpus_params(params, folder / "old.jsonl"),
                        params.workload.example_bytes, params.mixture_update)
    natural = natural_mixture(got.stats)
    one = np.eye(len(natural))[got.stats.domains.index("code")]  # all of the budget on python source
    budget = max(1, int(round(params.mixture.budget_fraction * got.stats.counts.sum())))
    check = dev_check(params.workload.build(), outcome_recipe(store.read("subset_outcomes")), got,
                      {"natural": natural, "one_domain": one}, np.ones(len(got.tasks)), budget,
                      replace(params.mixture_update, check_samples=2))
    assert check.pick == "natural" and check.gains[0] == 0.0 and check.gains[1] < 0
    assert check.retrained_models == 4


def test_grasp_mixture_update_writes_the_update_from_the_command_line(stored, tiny_config_file, capsys,
                                                                      monkeypatch, tmp_path):
    import dagster as dg

    from assets.cli import main

    # its own instance: the command reports its writes, which the shared run's catalog must not hear
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    folder, store, params = stored
    added = _added(folder, "added3.jsonl")
    assert main(["mixture-update", "--root", str(store.root), "--corpus", str(added),
                 "--config", str(tiny_config_file)]) == 0
    assert "hymns" in capsys.readouterr().out
    assert "hymns" in store.read("mixture_updates")["domain"].to_list()
    with dg.DagsterInstance.from_config(str(home)) as instance:  # reported where DAGSTER_HOME points
        event = instance.get_latest_materialization_event(dg.AssetKey("mixture_updates"))
        assert event.asset_materialization.metadata["mixture_updates.delta_version"].value == \
            store.version("mixture_updates")

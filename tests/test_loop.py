"""The closed loop: candidates become `active` fit subsets, compatible earlier outcomes are reused,
incompatible ones are not, and the trust follows the calibration."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.training.loop import LoopState, adapt, calibration_slope, realised_lower_bound, with_active

from .conftest import build_tables_until, tiny_params


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    params = tiny_params()
    store = build_tables_until(tmp_path_factory.mktemp("loop"), "mixture_weights", params)  # the loop and its readers
    return store, params


def test_every_retrained_candidate_is_an_active_fit_subset_with_an_outcome_per_task(looped):
    store, params = looped
    active = store.read("active_outcomes")
    rounds = store.read("curation_rounds")
    assert set(active["sampler"]) == {"active"} and set(active["role"]) == {"fit"}
    tasks = store.read("task_sets")["task"].n_unique()
    assert (active.group_by("subset_id").len()["len"] == tasks).all()
    members = {tuple(m) for m in active.unique("subset_id")["members"].to_list()}
    assert len(members) == active["subset_id"].n_unique()  # one id per distinct subset
    grasp = rounds.filter(pl.col("proposer") == "grasp")
    selections = {tuple(sorted(m)) for m in grasp.filter(pl.col("kind") == "selection")["members"].to_list()}
    assert selections <= members  # every selection candidate GRASP proposed was retrained and kept
    mixture_draws = params.loop.mixture_samples * grasp.filter(pl.col("kind") == "mixture").height
    assert len(members) <= len(selections) + mixture_draws
    assert grasp.filter(pl.col("chosen"))["kind"].sort().to_list() == ["mixture", "selection"]
    controls = {tuple(sorted(m)) for m in rounds.filter(pl.col("proposer") != "grasp")["members"].to_list() if m}
    assert controls and not controls & members  # the controls' retrainings never reach GRASP's fit set


def test_the_pick_after_each_round_is_the_best_bound_among_the_rounds_so_far(looped):
    store, params = looped
    rounds = store.read("curation_rounds")
    bound = "realised_lcb" if params.loop.pick == "realised" else "lcb"
    for proposer, kind in (("grasp", "mixture"), ("grasp", "selection"), ("random_pick", "mixture"),
                           ("random_pick", "selection")):
        mine = rounds.filter((pl.col("kind") == kind) & (pl.col("proposer") == proposer))
        for r in range(params.loop.rounds):
            (pick,) = mine.filter(pl.col("pick_after_rounds").list.contains(r)).iter_rows(named=True)
            assert pick["round"] <= r and pick[bound] == mine.filter(pl.col("round") <= r)[bound].max()
        last = mine.filter(pl.col("pick_after_rounds").list.contains(params.loop.rounds - 1))
        assert last["chosen"].to_list() == [True]  # after the last round: the loop's pick


def test_random_pick_gets_exactly_grasps_budget_and_filter_dedup_one_candidate_per_share(looped):
    store, params = looped
    rounds = store.read("curation_rounds")
    spent = rounds.group_by("proposer", "kind", "round").agg(pl.len(), pl.col("retrainings").sum()).sort(pl.all())
    grasp = spent.filter(pl.col("proposer") == "grasp").drop("proposer")
    assert grasp.height == 2 * params.loop.rounds and (grasp["retrainings"] > 0).all()
    # the same candidates per kind and round, the same dev retrainings
    assert spent.filter(pl.col("proposer") == "random_pick").drop("proposer").equals(grasp)
    shares = rounds.filter(pl.col("proposer") == "filter_dedup")
    assert shares.height == len(params.loop.filter_shares) and set(shares["kind"]) == {"selection"}
    assert (shares["retrainings"] == len(params.loop.order_seeds)).all()
    chosen = rounds.filter(pl.col("chosen")).group_by("proposer", "kind").len()
    assert chosen.height == 5 and (chosen["len"] == 1).all()  # one pick per proposer and kind
    pick = rounds.filter(pl.col("chosen") & (pl.col("proposer") == "grasp") & (pl.col("kind") == "selection"))
    domain = dict(zip(store.read("corpus_shards")["example_id"], store.read("corpus_shards")["domain"]))
    def counts(members):
        return sorted(Counter(domain[e] for e in members).items())
    for members in shares["members"].to_list():  # filter_dedup draws at the GRASP pick's domain counts
        assert counts(members) == counts(pick["members"][0]) and len(set(members)) == len(members)


def test_a_second_run_reuses_every_compatible_earlier_outcome(looped, tmp_path):
    store, params = looped
    earlier = store.read("active_outcomes")["subset_id"].n_unique()
    result = stages.run_curation_loop(store, params.workload.build(), params.loop)
    assert result.metrics["active_reused"] == earlier and result.metrics["active_refused"] == 0
    assert result.metrics["active_subsets"] > earlier  # the fit set grew by this run's candidates
    assert store.read("active_outcomes")["subset_id"].n_unique() >= earlier


def test_outcomes_of_another_recipe_are_kept_but_not_reused(tmp_path):
    params = tiny_params()
    store = build_tables_until(tmp_path, "curation_loop", params)
    active = store.read("active_outcomes")
    store.write("active_outcomes", active.with_columns(pl.col("recipe").str.replace('"steps": 4', '"steps": 5')))
    result = stages.run_curation_loop(store, params.workload.build(), params.loop)
    assert result.metrics["active_reused"] == 0
    assert result.metrics["active_refused"] == active["subset_id"].n_unique()
    kept = store.read("active_outcomes")
    assert set(active["subset_id"]) <= set(kept["subset_id"])  # nothing is thrown away


def test_with_active_appends_fit_subsets_of_sampler_active(looped):
    store, _ = looped
    data, _, _ = stages.load_subset_data(store)
    grown = with_active(data, [np.array([0, 1, 2]), np.array([3])], np.zeros((2, len(data.tasks))),
                        np.array([7, 8]))
    assert grown.membership.shape[0] == data.membership.shape[0] + 2
    assert list(grown.samplers[-2:]) == ["active", "active"] and list(grown.roles[-2:]) == ["fit", "fit"]
    assert np.allclose(grown.sum_z[-1], data.pool_sketch[3])
    assert len(grown.fit_rows) == len(data.fit_rows) + 2


def test_calibration_moves_the_trust():
    assert calibration_slope([0.1, 0.2, 0.3], [0.01, 0.02, 0.03]) == pytest.approx(0.1)
    assert np.isnan(calibration_slope([0.1, 0.1], [0.0, 1.0]))
    state = LoopState(data=None, config={}, trust=[1e-3], steps=[0.5, 1.0])
    adapt(state, 0.1)  # over-predicting: a stronger trust region, shorter mixture steps
    assert state.trust == [1e-2] and state.steps == [0.25, 0.5]
    adapt(state, 1.0)
    assert state.trust == [pytest.approx(1e-2 / 3)] and state.steps == [0.375, 0.75]


def test_the_realised_lower_bound_is_below_the_realised_gain_and_tight_without_noise():
    rng = np.random.default_rng(0)
    references = -3 + rng.normal(0, 0.01, (6, 2, 4))
    units = -3 + 0.05 + rng.normal(0, 0.01, (2, 4))
    bound = realised_lower_bound(units, references, 1.0, 300, 0)
    gain = units.mean() - references.mean()
    assert bound < gain and bound > gain - 0.03
    flat = realised_lower_bound(np.full((2, 4), -2.9), np.full((6, 2, 4), -3.0), 1.0, 100, 0)
    assert flat == pytest.approx(0.1)


def test_with_grasp_filter_share_grasps_selections_keep_out_of_the_filtered_rows(tmp_path):
    """loop.grasp_filter_share: GRASP's selection candidates pick no near duplicate and none of each
    domain's highest reference-model losses (the rows filter_dedup's filter drops at that share)."""
    import dataclasses

    from grasp_pipeline.corpus import near_duplicate_mask
    from grasp_pipeline.training.controls import quality_filter

    params = tiny_params()
    params = dataclasses.replace(params, loop=dataclasses.replace(params.loop, grasp_filter_share=0.3))
    store = build_tables_until(tmp_path, "curation_loop", params)
    sketches = store.read("gradient_sketches").sort("example_id")  # the loop's row order
    texts = sketches.select("example_id").join(store.read("corpus_shards").select("example_id", "text"),
                                               on="example_id", how="left", maintain_order="left")["text"]
    kept = ~near_duplicate_mask(texts.to_list(), params.loop.near_duplicate_threshold) & quality_filter(
        sketches["loss"].to_numpy(), sketches["domain"].to_numpy(), 0.3)
    allowed = set(sketches.filter(pl.Series(kept))["example_id"].to_list())
    rounds = store.read("curation_rounds").filter((pl.col("kind") == "selection") & (pl.col("proposer") == "grasp"))
    assert rounds.height > 0
    for members in rounds["members"].to_list():
        assert set(members) <= allowed
    # without the setting the same greedy does pick filtered rows: the test can tell the two apart
    plain = build_tables_until(tmp_path / "plain", "curation_loop", tiny_params())
    picked = plain.read("curation_rounds").filter((pl.col("kind") == "selection") & (pl.col("proposer") == "grasp"))
    assert any(not set(m) <= allowed for m in picked["members"].to_list())


def test_a_target_weights_the_loops_gains_and_every_later_stage_reads_it_back(looped, tmp_path):
    """loop.task_weights: every candidate's realised gain is the target-weighted mean of its per-task
    gains; the target is recorded in curation_rounds as set (missing tasks 1), where target_weights reads
    it for curated_selection, mixture_weights and the verdicts (a task the loop never saw weighs 1); a
    target changes what the loop proposes and the mixture GRASP optimises."""
    import json

    from grasp_pipeline.stages.tables import target_weights

    store, _ = looped
    tasks = sorted(store.read("task_sets")["task"].unique().to_list())
    target = {tasks[0]: 4.0, tasks[-1]: 4.0}  # the rest weigh 1
    weighted = build_tables_until(tmp_path, "mixture_weights", tiny_params(loop={"task_weights": target}))
    for root, expected in ((store, {t: 1.0 for t in tasks}), (weighted, {t: target.get(t, 1.0) for t in tasks})):
        rounds = root.read("curation_rounds")
        assert {s for s in rounds["task_weights"]} == {json.dumps(expected)}
        w = np.array([expected[t] for t in tasks]) / sum(expected.values())
        np.testing.assert_allclose(target_weights(root, tasks), w)
        for row in rounds.iter_rows(named=True):
            per_task = json.loads(row["realised_per_task"])
            assert row["realised_gain"] == pytest.approx(sum(w[i] * per_task[t] for i, t in enumerate(tasks)))
    raw = np.array([*(target.get(t, 1.0) for t in tasks), 1.0])  # the new task weighs 1
    np.testing.assert_allclose(target_weights(weighted, [*tasks, "new"]), raw / raw.sum())
    proposals = [{tuple(m) for m in root.read("curation_rounds").filter(pl.col("proposer") == "grasp")["members"]
                  .to_list() if m} for root in (store, weighted)]
    assert proposals[0] != proposals[1]
    optimum = [root.read("mixture_weights").filter(pl.col("method") == "grasp_optimum").sort("domain")["weight"]
               .to_numpy() for root in (store, weighted)]
    assert np.abs(optimum[0] - optimum[1]).max() > 0.01


def test_screen_search_retrains_each_blocks_best_ranked_random_draws_at_the_counts():
    """loop.selection_search = screen: candidates are random draws at the counts (keeping out the
    excluded rows), each block's best predicted by that block's refit, none retrained twice."""
    from grasp_pipeline.surrogates import Grasp, SubsetData
    from grasp_pipeline.training.controls import random_at_counts
    from grasp_pipeline.training.loop import predicted_mean_utility, refit, screened_candidates

    from .test_surrogate_science import planted_problem

    flat = planted_problem()
    data = SubsetData(flat.subset_ids, flat.roles, flat.samplers, flat.sizes, flat.membership, flat.utility,
                      flat.pool_sketch, flat.task_sketch, flat.tasks, sketch_blocks=2)
    config = Grasp(geometry="identity", sketch_block=0).config()
    excluded = np.arange(0, 120, 7)
    state = LoopState(data, config, trust=[0.1, 0.2], steps=[1.0], selection_blocks=[0, 1], excluded=excluded,
                      search="screen", screen_draws=40)
    groups, counts = np.arange(120) % 3, {0: 6, 1: 5, 2: 4}
    out = screened_candidates(state, refit(data, config, data.fit_rows), groups, counts, "natural",
                              np.full(3, 1 / 3), 1, 3, None)
    keep = ~np.isin(np.arange(120), excluded)
    draws = [random_at_counts(groups, counts, 3 + 50_000 + 10_000 + i, keep=keep) for i in range(40)]
    assert len(out) == 4 and len({tuple(c.subsets[0]) for c in out}) == 4
    taken: set = set()
    for block in (0, 1):
        predicted = predicted_mean_utility(refit(data, {**config, "sketch_block": block}, data.fit_rows), data,
                                           draws, state.weights)
        best = [i for i in np.argsort(-predicted) if i not in taken][:2]
        taken.update(best)
        mine = [c.subsets[0] for c in out if c.setting["sketch_block"] == block]
        assert [tuple(rows) for rows in mine] == [tuple(draws[i]) for i in best]
    for cand in out:
        rows = cand.subsets[0]
        assert Counter(groups[rows].tolist()) == counts and not set(rows) & set(excluded.tolist())


def test_repetition_caps_allow_max_epochs_passes_over_each_domains_corpus_bytes():
    from grasp_pipeline.config.validation import SettingError
    from grasp_pipeline.mixture.objective import repetition_caps

    sizes = {"a": 100, "b": 300, "c": 600}
    np.testing.assert_array_equal(repetition_caps(sizes, ["a", "b", "c"], 0, 4.0), np.ones(3))  # no run size
    np.testing.assert_allclose(repetition_caps(sizes, ["a", "b", "c", "new"], 1000, 2.0), [0.2, 0.6, 1.0, 1.0])
    with pytest.raises(SettingError, match="loop.training_bytes = 5000: with loop.max_epochs = 2"):
        repetition_caps(sizes, ["a", "b", "c"], 5000, 2.0)  # 1000 bytes read twice is short of 5000
    with pytest.raises(SettingError, match="rematerialise corpus_shards"):
        repetition_caps(None, ["a"], 10, 1.0)


def test_with_a_target_run_size_every_mixer_stays_within_the_repetition_caps(looped, tmp_path):
    """loop.training_bytes: the loop's mixtures (GRASP's and random_pick's) and every fitted mixer's in
    mixture_weights ask for at most max_epochs passes over a domain's corpus bytes; without the setting
    some of them ask for more (the caps bind: the test can tell the two apart)."""
    from grasp_pipeline.config.params import ExportParams
    from grasp_pipeline.ops.export import export_for_trainers
    from grasp_pipeline.stages.tables import corpus_bytes

    sizes = corpus_bytes(looped[0])
    total = sum(sizes.values())
    training_bytes = int(0.8 * total)  # one pass allowed: a domain may supply 1.25 × its natural share
    params = tiny_params(loop={"training_bytes": training_bytes, "max_epochs": 1.0})
    store = build_tables_until(tmp_path, "mixture_weights", params)

    def shares(store):
        rounds = store.read("curation_rounds").filter(pl.col("kind") == "mixture")
        mixed = [json.loads(w) for w in rounds["weights"].to_list()]
        fitted = store.read("mixture_weights").filter(~pl.col("method").is_in(["natural", "uniform"]))
        mixed += [dict(rows.select("domain", "weight").iter_rows()) for _, rows in fitted.group_by("mixture_id")]
        return mixed

    def over(mixture):
        return max(w * training_bytes / sizes[d] for d, w in mixture.items())

    capped = store.read("curation_rounds")
    assert set(capped["training_bytes"]) == {training_bytes} and set(capped["max_epochs"]) == {1.0}
    assert max(over(m) for m in shares(store)) <= 1 + 1e-6
    assert max(over(m) for m in shares(looped[0])) > 1.05
    # the export states the same run: its Olmix form's repetition factors are the caps' epochs
    export_for_trainers(store, ExportParams(destination=str(tmp_path / "out"), methods=("grasp",)))
    for path in (tmp_path / "out" / "mixtures").glob("*.json"):
        olmix = json.loads(path.read_text())["olmix"]
        assert olmix["max_tokens"] == training_bytes
        assert max(m["repetition_factor"] for m in olmix["mix"].values()) <= 1 + 1e-6

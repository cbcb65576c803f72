"""Every setting is checked when it is read, from a config file (the CLI) and from the launchpad
(Dagster run config): the error names `section.field`, the value and the valid range, and no
table version changes. A budget the pool cannot fill is refused by the stage, by name too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import dagster as dg
import pytest

from grasp_pipeline import stages
from grasp_pipeline.config import SettingError
from grasp_pipeline.infra.storage import CONTRACT, DeltaStore

from .conftest import TINY, build_tables_until, copy_root, tiny_params

# (section, {field: value}, what the message must say); the first five are the audit's cases
BAD_SETTINGS = [
    ("selection", {"budget_fraction": -0.1},
     r"selection\.budget_fraction = -0\.1: is out of range: valid values are in \(0, 1\]"),
    ("selection", {"budget_fraction": math.nan},
     r"selection\.budget_fraction = nan: must be a finite number in \(0, 1\]"),
    ("sketch", {"k": 0}, r"sketch\.k = 0: is out of range: valid values are ≥ 1"),
    ("validation", {"repeats": 0}, r"validation\.repeats = 0: is out of range: valid values are ≥ 1"),
    ("selection", {"budget_fraction": 1.5}, r"selection\.budget_fraction = 1\.5: .*in \(0, 1\]"),
    ("mixture", {"budget_fraction": math.inf}, r"mixture\.budget_fraction = inf: must be a finite number"),
    ("retrain", {"lr": -0.001}, r"retrain\.lr = -0\.001: .*in \(0, 100\.0\]"),
    ("reference", {"lr": 1e308}, r"reference\.lr = 1e\+308: is out of range: valid values are in \(0, 100\.0\]"),
    ("retrain", {"steps": 2**63 - 1}, r"retrain\.steps = 9223372036854775807: .*in \[1, 10000000\]"),
    ("retrain", {"repeats": 0}, r"retrain\.repeats = 0: .*≥ 1"),
    ("reference", {"optimizer": "adamw"}, r"reference\.optimizer = 'adamw': .*one of \['adam', 'sgd'\]"),
    ("reference", {"adam_beta1": 1.0}, r"reference\.adam_beta1 = 1\.0: .*in \[0, 1\)"),
    ("reference", {"sketch_steps": [4, 100]},
     r"reference\.sketch_steps = \[4, 100\]: must be distinct steps in 0\.\.8"),
    ("sketch", {"projection": "dense"}, r"sketch\.projection = 'dense': .*one of \['sjlt', 'gaussian'"),
    ("sketch", {"storage_dtype": "int8"}, r"sketch\.storage_dtype = 'int8'"),
    ("plan", {"uniform_fraction": 0.0}, r"plan\.uniform_fraction = 0\.0: .*in \(0, 1\]"),
    ("plan", {"dirichlet_beta": -1.0}, r"plan\.dirichlet_beta = -1\.0: .*> 0"),
    ("plan", {"dirichlet_min_fraction": 0.5}, r"plan\.dirichlet_min_fraction = 0\.5: must be at most "
                                               r"plan\.dirichlet_max_fraction = 0\.4"),
    ("plan", {"subsets_per_batch": 0}, r"plan\.subsets_per_batch = 0"),
    ("surrogate", {"cv_folds": 1}, r"surrogate\.cv_folds = 1: .*≥ 2"),
    ("surrogate", {"delta": 1.5}, r"surrogate\.delta = 1\.5: .*in \(0, 1\)"),
    ("surrogate", {"grasp_normalisations": ["none", "l2"]}, r"surrogate\.grasp_normalisations\[1\] = 'l2'"),
    ("selection", {"greedy": "fast"}, r"selection\.greedy = 'fast': .*one of \['lazy', 'exact', 'batched'\]"),
    ("loop", {"task_weights": {"news": -2.0}}, r"loop\.task_weights\.news = -2\.0: .*≥ 0"),
    ("mixture", {"max_repeats": 0.0}, r"mixture\.max_repeats = 0\.0: .*> 0"),
    ("corpus", {"shard_size": 0}, r"corpus\.shard_size = 0: .*≥ 1"),
    ("corpus", {"max_decompression_ratio": 0.5}, r"corpus\.max_decompression_ratio = 0\.5: .*≥ 1"),
    ("workload", {"example_bytes": 2}, r"workload\.example_bytes = 2: .*≥ 4"),
    ("workload", {"torch_threads": -1}, r"workload\.torch_threads = -1: .*≥ 0"),
]
# only a config file can hold a value of the wrong type (the launchpad's own types refuse it first)
WRONG_TYPES = [
    ("retrain", {"steps": "ten"}, r"retrain\.steps = 'ten': must be an integer in \[1, 10000000\]"),
    ("selection", {"dedup_content": 1}, r"selection\.dedup_content = 1: must be true or false"),
    ("surrogate", {"grasp_ridges": 0.1}, r"surrogate\.grasp_ridges = 0\.1: must be a list of numbers"),
]
# one budget in three sections: the loop picks `grasp` at loop.budget_fraction (a config file holds all three;
# the launchpad sets each asset's section alone)
DISAGREEING_BUDGETS = [
    (section, {"budget_fraction": 0.3}, rf"{section}\.budget_fraction = 0\.3: must equal loop\.budget_fraction = 0\.2")
    for section in ("selection", "mixture")]
CASE_IDS = [f"{section}.{next(iter(values))}={next(iter(values.values()))!r}" for section, values, _ in BAD_SETTINGS]


@pytest.fixture(scope="module")
def built_root(tmp_path_factory):
    """Every table up to the surrogates (the tiny config), built once."""
    root = tmp_path_factory.mktemp("settings") / "root"
    build_tables_until(root, "surrogates")
    return root


def table_versions(root) -> dict:
    store = DeltaStore(str(root))
    return {table: store.version(table) for table in CONTRACT}


@pytest.mark.parametrize("section, values, message", BAD_SETTINGS + WRONG_TYPES + DISAGREEING_BUDGETS,
                         ids=CASE_IDS + [f"{s}.{next(iter(v))}:type" for s, v, _ in WRONG_TYPES]
                         + [f"{s}.{next(iter(v))}:disagrees" for s, v, _ in DISAGREEING_BUDGETS])
def test_a_bad_setting_in_a_config_file_stops_grasp_run_naming_it(built_root, tmp_path, monkeypatch, capsys,
                                                                  section, values, message):
    from assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    config = {**TINY, section: {**TINY.get(section, {}), **values}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))  # (Python's json writes NaN and Infinity, as TOML's nan and inf)
    before = table_versions(built_root)
    assert main(["run", "--config", str(path), "--root", str(built_root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grasp: error: ")
    assert re.search(message, err), err
    assert table_versions(built_root) == before


# the stage (op) each section configures; a bad workload setting fails the first stage that builds it
SECTION_ASSET = {**{stage.section: stage.name for stage in stages.STAGES if stage.section}, "workload": "corpus_shards"}


@pytest.mark.parametrize("section, values, message", BAD_SETTINGS, ids=CASE_IDS)
def test_a_bad_setting_in_the_launchpad_fails_the_step_naming_it(built_root, section, values, message):
    from assets.cli import error_chain
    from assets.definitions import defs
    from assets.jobs import JOB_ASSETS
    from assets.run_config import run_config_for

    asset = SECTION_ASSET[section]
    job_name = next(job for job, assets in JOB_ASSETS.items() if asset in assets)
    from assets.catalog import asset_keys

    # the stage's every table: a multi-asset runs as a whole (assets/catalog.py)
    job = defs.resolve_job_def(job_name).get_subset(asset_selection=set(asset_keys([asset])))
    config = run_config_for(tiny_params(), str(built_root))
    target = config["resources"]["workload"]["config"] if section == "workload" else config["ops"][asset]["config"]
    target.update(values)
    config["ops"] = {asset: config["ops"][asset]}
    before = table_versions(built_root)
    store = DeltaStore(str(built_root))
    partitions = {"gradient_sketches": ("corpus_shards", store.read("corpus_shards")["shard"]),
                  "subset_outcomes": ("retraining_batches", store.read("subset_plan")["batch"])}
    with dg.instance_for_test() as instance:
        key = None
        if asset in partitions:  # a partitioned asset runs for one registered partition
            name, keys = partitions[asset]
            instance.add_dynamic_partitions(name, sorted(set(keys)))
            key = sorted(set(keys))[0]
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False,
                                        partition_key=key)
    assert not result.success
    failures = [error_chain(e.event_specific_data.error) for e in result.all_events
                if e.is_step_failure and e.event_specific_data is not None]
    assert failures and re.search(message, failures[0]), failures
    assert table_versions(built_root) == before


# ------------------------------------------------------------------ budgets the pool cannot fill

@pytest.fixture
def store(built_root, tmp_path) -> DeltaStore:
    return copy_root(built_root, tmp_path / "root")


def test_a_selection_budget_above_what_the_pool_can_give_is_refused_not_shortened(store):
    pool = store.read("corpus_shards")
    excluded = tuple(pool["example_id"].head(3).to_list())
    budget = {"budget_fraction": 1.0}
    params = tiny_params(selection={**budget, "exclude_example_ids": list(excluded)}, mixture=budget,
                         loop=budget).selection
    before = table_versions(store.root)
    with pytest.raises(SettingError, match=rf"selection.budget_fraction = 1.0: asks for {pool.height} of {pool.height} "
                                           rf"pool examples, but only \d+ can be selected \(3 excluded, \d+ duplicate "
                                           r"contents\); valid values are in \(0, 0\.\d+\]"):
        stages.run_curated_selection(store, params)
    assert table_versions(store.root) == before


def test_a_budget_that_per_domain_quotas_cannot_fill_is_refused_naming_the_quota(store):
    pool = store.read("corpus_shards")
    domains = pool["domain"].n_unique()
    params = tiny_params().selection
    budget = max(1, int(round(params.budget_fraction * pool.height)))
    quota = budget // domains - 1 if budget // domains > 1 else 0  # every domain full still falls short
    assert quota * domains < budget and quota > 0
    before = table_versions(store.root)
    with pytest.raises(SettingError, match=rf"selection.max_per_domain = {quota}: {domains} domains × at most "
                                           rf"{quota} hold {quota * domains} examples, fewer than the budget of "
                                           rf"{budget} .*raise max_per_domain to at least"):
        stages.run_curated_selection(store, replace(params, max_per_domain=quota))
    assert table_versions(store.root) == before


@pytest.mark.parametrize("section", ["selection", "mixture", "loop"])
def test_a_budget_that_disagrees_with_the_other_two_is_refused_naming_it(section):
    budgets = {**{name: TINY[name]["budget_fraction"] for name in ("selection", "mixture", "loop")}, section: 0.5}
    named = "selection" if section == "loop" else section  # the loop's is the one the others must equal
    with pytest.raises(SettingError, match=rf"{named}\.budget_fraction = {budgets[named]}: must equal "
                                           rf"loop\.budget_fraction = {budgets['loop']}"):
        tiny_params(**{section: {"budget_fraction": 0.5}})


def test_a_mixture_budget_beyond_its_repeat_cap_is_refused(store):
    budget = {"budget_fraction": 0.5}
    params = tiny_params(selection=budget, loop=budget, mixture={**budget, "max_repeats": 0.25}).mixture
    with pytest.raises(SettingError, match=r"mixture.max_repeats = 0.25: with mixture.budget_fraction = 0.5 .* it "
                                           r"must be at least 0.5"):
        stages.run_mixture_weights(store, params)
    assert not store.exists("mixture_weights")


# ------------------------------------------------------------------ one declaration per setting

def test_a_workload_setting_two_workloads_declare_has_one_default():
    """WorkloadParams inherits every workload's fields: a field two of them declare (`hidden`) is one
    setting, so its defaults must agree (otherwise the base listed first would win unseen)."""
    from dataclasses import fields

    from grasp_pipeline.config import WorkloadParams
    from grasp_pipeline.workloads import WORKLOADS

    defaults: dict[str, set] = {}
    for _, params_cls in WORKLOADS.values():
        for f in fields(params_cls):
            defaults.setdefault(f.name, set()).add(repr(f.default))
    assert {name: values for name, values in defaults.items() if len(values) > 1} == {}
    assert {f.name for f in fields(WorkloadParams)} >= set(defaults)


def test_the_workload_factory_and_the_settings_default_to_one_workload():
    from grasp_pipeline.config import WorkloadParams
    from grasp_pipeline.workloads import make_workload

    assert make_workload().name == WorkloadParams().name == WorkloadParams().build().name

"""A root follows its corpus (issue 31, item 2): corpus A, then corpus B on the same root.

The partitioned tables (gradient_sketches by shard, subset_outcomes by batch) are written
partition by partition, as the Dagster shard and batch runs write them; afterwards they hold
B's partitions only, in one commit per write, and the lineage records the switch. Real Delta
tables, real stages; the second test goes through the Dagster jobs `grasp run` launches.
"""

from __future__ import annotations

import dagster as dg

from grasp_pipeline import stages
from grasp_pipeline.infra.commits import LINEAGE_KEY
from grasp_pipeline.infra.storage import DeltaStore

from .conftest import tiny_params, write_user_corpus

# B keeps one of A's domains under the same name (its shard keys overlap A's, with other text)
# and drops the others (their shard keys vanish)
A_DOMAINS, A_SOURCES = ("news", "code", "poetry"), ("english_literature", "python_source", "german_literature")
B_DOMAINS, B_SOURCES = ("news", "letters"), ("french_literature", "italian_literature")


def corpora(folder):
    return (write_user_corpus(folder / "a.jsonl", A_DOMAINS, source_domains=A_SOURCES),
            write_user_corpus(folder / "b.jsonl", B_DOMAINS, source_domains=B_SOURCES))


def build_partitioned(store: DeltaStore, corpus, subsets_per_batch: int = 8) -> None:
    """The stages up to task_sketches; gradient_sketches written shard by shard (as separate Dagster
    partition runs do), subset_outcomes as one write of every batch (as `grasp run`'s one range run)."""
    params = tiny_params(corpus={"corpus_path": str(corpus)}, plan={"subsets_per_batch": subsets_per_batch})
    workload = params.workload.build()
    stages.run_corpus_shards(store, params.corpus, params.workload.example_bytes, workload)
    stages.run_reference_model(store, workload, params.reference)
    for shard in store.partition_values("corpus_shards", "shard"):
        stages.run_gradient_sketches(store, workload, params.sketch, shards=[shard])
    stages.run_subset_plan(store, params.plan)
    stages.run_subset_outcomes(store, workload, params.retrain,
                            batches=store.read("subset_plan")["batch"].unique().sort().to_list())
    stages.run_task_sketches(store, workload, params.sketch.chunk_size)


def facts(store: DeltaStore, table: str, version: int | None = None) -> dict:
    version = store.version(table) if version is None else version
    return store.commit_info(table, version)[LINEAGE_KEY]["facts"]


def assert_only_current_partitions(store: DeltaStore) -> None:
    """Every partitioned table holds exactly the partitions (and the build) of the current corpus."""
    pool = store.read("corpus_shards")
    sketches = store.read("gradient_sketches")
    assert store.partition_values("gradient_sketches", "shard") == sorted(pool["shard"].unique().to_list())
    assert sorted(sketches["example_id"].to_list()) == sorted(pool["example_id"].to_list())
    assert sketches["build_id"].unique().to_list() == pool["build_id"].unique().to_list()
    assert sketches["model_version"].n_unique() == 1
    plan = store.read("subset_plan")
    assert store.partition_values("subset_outcomes", "batch") == sorted(plan["batch"].unique().to_list())
    outcomes = store.read("subset_outcomes")
    assert set(outcomes["subset_id"].to_list()) == set(plan["subset_id"].to_list())


def test_partition_runs_of_a_second_corpus_leave_only_its_partitions_and_record_the_switch(tmp_path):
    corpus_a, corpus_b = corpora(tmp_path)
    store = DeltaStore(str(tmp_path / "root"))
    build_partitioned(store, corpus_a)
    a_shards = store.partition_values("corpus_shards", "shard")
    a_batches = store.partition_values("subset_outcomes", "batch")
    a_hash = facts(store, "corpus_shards")["corpus_content_sha1"]
    a_sketch_version, a_outcomes_version = store.version("gradient_sketches"), store.version("subset_outcomes")

    # B's plan packs its subsets into fewer batches: the last of A's batches vanish
    build_partitioned(store, corpus_b, subsets_per_batch=16)  # task_sketches ran last: it refuses mixed shards
    b_shards = store.partition_values("corpus_shards", "shard")
    assert set(a_shards) - set(b_shards) and set(a_shards) & set(b_shards)  # some vanish, some are reused
    assert_only_current_partitions(store)
    # the corpus commit names the corpus it replaced
    b_facts = facts(store, "corpus_shards")
    assert b_facts["corpus_content_sha1"] != a_hash and b_facts["replaced_corpus_content_sha1"] == a_hash
    # the first shard write after the switch removed A's vanished shards, in its own commit
    first = facts(store, "gradient_sketches", a_sketch_version + 1)
    assert first["removed_partitions"] == sorted(set(a_shards) - set(b_shards))
    # and A's batches that B's plan has no more
    removed = [b for v in range(a_outcomes_version + 1, store.version("subset_outcomes") + 1)
               for b in facts(store, "subset_outcomes", v).get("removed_partitions", [])]
    assert removed and removed == sorted(set(a_batches) - set(store.partition_values("subset_outcomes", "batch")))


def test_grasp_run_jobs_on_a_second_corpus_leave_only_its_partitions(tmp_path):
    """The jobs `grasp run` launches (prepare, sketch and retrain over every registered
    partition, then task_sketches) for corpus A, then B, on one root and one Dagster instance."""
    from assets.definitions import defs
    from assets.jobs import JOB_ASSETS, job_range_tags
    from assets.run_config import run_config_for

    corpus_a, corpus_b = corpora(tmp_path)
    root, home = tmp_path / "root", tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        for corpus in (corpus_a, corpus_b):
            config = run_config_for(tiny_params(corpus={"corpus_path": str(corpus)}), str(root))
            for job, stages_of_job in (*((j, JOB_ASSETS[j]) for j in ("grasp_prepare", "grasp_sketch",
                                                                      "grasp_retrain")),
                                       ("grasp_fit_and_curate", ["task_sketches"])):
                job_def = defs.resolve_job_def(job)
                if job == "grasp_fit_and_curate":
                    from assets.catalog import asset_keys
                    job_def = job_def.get_subset(asset_selection=set(asset_keys(stages_of_job)))
                ops = {k: v for k, v in config["ops"].items() if k in stages_of_job}
                result = job_def.execute_in_process(run_config={**config, "ops": ops}, instance=instance,
                                                    tags=job_range_tags(instance, job))
                assert result.success, job
        store = DeltaStore(str(root))
        assert_only_current_partitions(store)
        assert sorted(instance.get_dynamic_partitions("corpus_shards")) == store.partition_values("corpus_shards",
                                                                                                  "shard")
        assert facts(store, "corpus_shards").get("replaced_corpus_content_sha1")
        assert store.read("gradient_sketches")["domain"].unique().sort().to_list() == sorted(B_DOMAINS)

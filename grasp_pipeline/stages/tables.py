"""Readers the stages share: the pool, the tasks, pool sketches, subset data, the reference
model, partition filters and the fingerprints that tie rows to what produced them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from ..corpus.split import SPLITS
from ..infra.checkpoint_files import checkpoint_location, read_state
from ..infra.storage import DeltaStore
from ..mixture.objective import repetition_caps
from ..surrogates.data import SubsetData
from ..training.retrain import Recipe
from ..workloads.base import Workload, state_fingerprint


def sketch_matrix(column: pl.Series, dtype=np.float64) -> np.ndarray:
    """(n, k) array of a list column of equal-length vectors (sketches), through Arrow: no
    Python lists in between (at 10⁶ × 256 those were most of a stage). Ragged rows are an error."""
    if column.len() == 0:
        return np.zeros((0, 0), dtype)
    width = int(column.list.len().max())
    return column.list.to_array(width).to_numpy().astype(dtype, copy=False)


def read_pool(store: DeltaStore, shards: list[str] | None = None) -> pl.DataFrame:
    """Returns the pool sorted by example_id: its row order indexes every pool matrix.

    With `shards` (shard keys) only those partitions, read from their own files alone (a
    pushed-down partition filter); an unknown key is an error naming it.
    """
    if shards is None:
        return store.read("corpus_shards").sort("example_id")
    check_partition_keys(shards, store.partition_values("corpus_shards", "shard"), "shard", "corpus_shards")
    return store.read("corpus_shards", where={"shard": shards}).sort("example_id")


def natural_weights(store: DeltaStore) -> dict[str, float] | None:
    """{domain: weight} of the natural mixture as the corpus stage recorded it (corpus.natural); None for
    a pool written before it did (the pool's own counts then stand in: mixture.natural_mixture)."""
    if "domain_natural" not in store.column_names("corpus_shards"):
        return None
    rows = store.read("corpus_shards", columns=["domain", "domain_natural"]).unique("domain")
    return dict(rows.iter_rows())


def target_weights(store: DeltaStore, tasks: list[str]) -> np.ndarray:
    """The target (loop.task_weights) as the loop recorded it in curation_rounds, normalised over `tasks` in
    their order; a task the loop never saw (a new domain's) weighs 1, as a task missing from the setting
    does; every task alike without curation_rounds or for rounds written before targets."""
    stored = {}
    if store.exists("curation_rounds") and "task_weights" in store.column_names("curation_rounds"):
        rounds = store.read("curation_rounds", columns=["task_weights"])
        stored = json.loads(rounds["task_weights"][0]) if rounds.height else {}
    weights = np.array([float(stored.get(t, 1.0)) for t in tasks])
    return weights / weights.sum()


def corpus_bytes(store: DeltaStore) -> dict[str, int] | None:
    """Each domain's bytes in the whole corpus (corpus_sources), or None before that table existed."""
    if not store.exists("corpus_sources"):
        return None
    sources = store.read("corpus_sources", columns=["domain", "bytes"])
    return dict(sources.group_by("domain").agg(pl.col("bytes").sum()).iter_rows())


def target_run(store: DeltaStore) -> tuple[int, float]:
    """(loop.training_bytes, loop.max_epochs) as the loop recorded them in curation_rounds; (0, 0.0), no
    run size, without curation_rounds or for rounds written before run sizes."""
    if not store.exists("curation_rounds") or "training_bytes" not in store.column_names("curation_rounds"):
        return 0, 0.0
    rounds = store.read("curation_rounds", columns=["training_bytes", "max_epochs"])
    return (int(rounds["training_bytes"][0]), float(rounds["max_epochs"][0])) if rounds.height else (0, 0.0)


def run_caps(store: DeltaStore, domains: list[str], training_bytes: int, max_epochs: float) -> np.ndarray:
    """The repetition caps of a run of `training_bytes` over `domains` (mixture.objective.repetition_caps);
    ones without a run size, and then corpus_sources is not read (nor recorded in the lineage)."""
    if not training_bytes:
        return np.ones(len(domains))
    return repetition_caps(corpus_bytes(store), domains, training_bytes, max_epochs)


def target_caps(store: DeltaStore, domains: list[str]) -> np.ndarray:
    """The repetition caps of the target run as the loop recorded it (`target_run`)."""
    return run_caps(store, domains, *target_run(store))


def read_tasks(store: DeltaStore, split: str) -> tuple[pl.DataFrame, list[str], np.ndarray]:
    """Returns (the `split` rows of task_sets sorted by task, example_id; task names; task index of each row).

    `split` is "dev" (everything that fits, chooses or selects) or "test" (the curation test
    only); there is no default, so every reader says which side it reads.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    frame = store.read("task_sets")
    if "split" not in frame.columns:
        raise ValueError("task_sets has no dev/test `split` column (written before the held-out test split); "
                         "rematerialise corpus_shards")
    frame = frame.filter(pl.col("split") == split).sort("task", "example_id")
    names = sorted(frame["task"].unique().to_list())
    index = np.searchsorted(np.asarray(names), frame["task"].to_numpy())
    return frame, names, index


def check_one_build(pool: pl.DataFrame, tasks: pl.DataFrame) -> None:
    """Raises ValueError naming both build ids when the pool and the task sets come from different
    corpus builds (tables written before build ids carry none and are not checked)."""
    if "build_id" not in pool.columns or "build_id" not in tasks.columns:
        return
    pool_builds, task_builds = sorted(pool["build_id"].unique().to_list()), sorted(tasks["build_id"].unique().to_list())
    if len(pool_builds) != 1 or pool_builds != task_builds:
        raise ValueError(f"corpus_shards is from corpus build(s) {pool_builds} but task_sets from {task_builds}: "
                         "the pool and the task sets were written by different corpus builds (two builds "
                         "interleaved on this root), so task examples could leak into the pool; rematerialise "
                         "corpus_shards")


def check_one_surrogate(store: DeltaStore) -> str:
    """Returns the surrogate id all surrogate tables share; ValueError naming each table's ids when
    they disagree (a surrogate fit interrupted between its table writes, or tables from two fits)."""
    ids = {table: sorted(store.read(table, columns=["surrogate_id"])["surrogate_id"].unique().to_list())
           for table in SURROGATE_TABLES if store.exists(table)}
    distinct = {i for found in ids.values() for i in found}
    if not distinct:
        return ""  # no surrogate table yet: the caller's read says what to materialise
    if len(distinct) > 1:
        described = "; ".join(f"{table}: {found}" for table, found in ids.items())
        raise ValueError(f"the surrogate tables disagree on the surrogate ({described}); rematerialise "
                         "surrogates so all of them come from one fit")
    return distinct.pop()


SURROGATE_TABLES = ("surrogates", "surrogate_candidates", "surrogate_predictions", "fidelity_report")


def check_one_model(store: DeltaStore) -> str:
    """Returns the reference model version that gradient_sketches, task_sketches and the surrogates were
    computed at; ValueError naming each table's model(s) when they differ (a rerun reference model whose
    sketches were redone but not the surrogate fit, or the other way round): selecting with one model's
    sketches through a surrogate fitted on another's is silently wrong. Surrogates written before they
    recorded their model are not checked."""
    found = {}
    for table in ("gradient_sketches", "task_sketches", "surrogates"):
        if not store.exists(table):
            continue
        frame = store.read(table) if table == "surrogates" else store.read(table, columns=["model_version"])
        if "model_version" in frame.columns:
            found[table] = sorted(frame["model_version"].unique().to_list())
    distinct = {v for versions in found.values() for v in versions}
    if len(distinct) > 1:
        described = "; ".join(f"{table}: {versions}" for table, versions in found.items())
        raise ValueError(f"the sketches and the surrogate come from different reference models ({described}); "
                         "rematerialise the stale ones (grasp_refresh_sketches_and_surrogate) so all of them are "
                         "computed at one reference model")
    return distinct.pop() if distinct else ""


def check_one_fit(frames: dict[str, tuple[pl.DataFrame, str]]) -> None:
    """Raises ValueError naming each table's surrogate ids when outputs combined downstream (the selections
    and mixtures an export hands to trainers) come from different surrogate fits, i.e. from sketches and
    surrogates of different reference models or builds. `frames`: table -> (rows, id column); an id starts
    with its fit's surrogate id (`sg-<12 hex>-<method>`); ids of another form are not checked."""
    found = {table: sorted(frame[column].str.extract(r"^(sg-[0-9a-f]{12})-").drop_nulls().unique().to_list())
             for table, (frame, column) in frames.items()}
    found = {table: ids for table, ids in found.items() if ids}
    if len({i for ids in found.values() for i in ids}) > 1:
        described = "; ".join(f"{table}: {ids}" for table, ids in found.items())
        raise ValueError(f"{' and '.join(found)} come from different surrogate fits ({described}); rematerialise "
                         "curated_selection and mixture_weights from one fit before exporting")


def encoded_pool_and_tasks(store: DeltaStore, workload: Workload, split: str):
    """Returns (pool, encoded pool, encoded `split` task examples, task names, task index of each)."""
    pool = read_pool(store)
    tasks_frame, names, index = read_tasks(store, split)
    check_one_build(pool, tasks_frame)
    return (pool, workload.encode(pool["text"].to_list()), workload.encode(tasks_frame["text"].to_list()),
            names, index)


def select_partitions(frame: pl.DataFrame, column: str, keys: list[str] | None, table: str) -> pl.DataFrame:
    """The rows of partitions `keys` (all rows for None); unknown keys are an error naming them."""
    if keys is None:
        return frame
    check_partition_keys(keys, frame[column].unique().to_list(), column, table)
    return frame.filter(pl.col(column).is_in(keys))


def check_partition_keys(keys: list[str], known: list[str], column: str, table: str) -> None:
    """Raises ValueError naming the `keys` that are not among `table`'s `known` values of `column`."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"{column} key(s) {unknown} are not in {table} (it has: {sorted(known)}); "
                         f"rematerialise {table}")


def pool_sketches(store: DeltaStore) -> pl.DataFrame:
    """Returns gradient_sketches sorted by example_id, checked to be one projection of the whole pool.

    Shards are written separately, so a table mixing projections or model versions, or
    missing shards, is caught here instead of silently mixing sketch spaces.
    """
    sketches = store.read("gradient_sketches").sort("example_id")
    configs = sketches.group_by("sketch_config").agg(pl.col("shard").unique().sort())
    if configs.height > 1:
        described = "; ".join(f"shards {row['shard'][:5]} → {row['sketch_config'][:160]}"
                              for row in configs.iter_rows(named=True))
        raise ValueError(f"gradient_sketches mixes {configs.height} projections/model versions across shards "
                         f"({described}); rematerialise every gradient_sketches partition")
    pool = read_pool(store)
    if "build_id" in sketches.columns and "build_id" in pool.columns:
        stale = sketches.filter(~pl.col("build_id").is_in(pool["build_id"].unique().implode()))
        if stale.height:
            raise ValueError(f"gradient_sketches shards {sorted(stale['shard'].unique().to_list())[:5]} were sketched "
                             f"from corpus build {stale['build_id'][0]}, but corpus_shards is build "
                             f"{pool['build_id'][0]}; rematerialise those gradient_sketches partitions")
    if not sketches["example_id"].equals(pool["example_id"]):
        missing = pool.filter(~pl.col("example_id").is_in(sketches["example_id"].implode()))
        raise ValueError(f"gradient_sketches does not cover corpus_shards: {missing.height} pool examples have no "
                         f"sketch (shards {sorted(missing['shard'].unique().to_list())[:5]}), {sketches.height} "
                         f"sketches for {pool.height} pool examples; materialise the missing gradient_sketches "
                         "partitions (or rematerialise all of them after corpus_shards changed)")
    return sketches


def members_digest(members) -> str:
    """Fingerprint of a subset's members: ties each outcome row to the plan it was trained on."""
    return hashlib.sha1(np.asarray(members, dtype=np.int64).tobytes()).hexdigest()[:16]


def load_subset_data(store: DeltaStore) -> tuple[SubsetData, pl.DataFrame, pl.DataFrame]:
    """Joins sketches, plan and outcomes into a SubsetData; returns it with the sketch and plan frames."""
    sketches = pool_sketches(store)
    task_frame = store.read("task_sketches").sort("task")
    plan = store.read("subset_plan").sort("subset_id")
    outcomes = store.read("subset_outcomes")
    outcome_recipe(outcomes)
    tasks = task_frame["task"].to_list()
    planned = plan.select("subset_id", pl.col("members").map_elements(members_digest, return_dtype=pl.Utf8)
                          .alias("planned_sha1"))
    stale = outcomes.join(planned, on="subset_id").filter(pl.col("members_sha1") != pl.col("planned_sha1"))
    if stale.height:
        raise ValueError(f"subset_outcomes for subset {stale['subset_id'][0]} (batch {stale['batch'][0]}) were "
                         "trained on different members than subset_plan now lists; rematerialise subset_outcomes")
    mean_utility = (outcomes.group_by("subset_id", "task").agg(pl.col("utility").mean())
                    .pivot(on="task", index="subset_id", values="utility"))
    plan = plan.join(mean_utility, on="subset_id", how="left")
    incomplete = plan.filter(pl.any_horizontal(pl.col(tasks).is_null()))
    if incomplete.height:
        raise ValueError(f"{incomplete.height} planned subset(s) lack outcomes (first: subset "
                         f"{incomplete['subset_id'][0]}); rematerialise subset_outcomes")
    fit = plan.filter(pl.col("role") == "fit")
    for task in tasks:  # a constant target has no ranking to learn: every fit would be arbitrary
        values = fit[task].to_numpy()
        if len(values) and np.ptp(values) == 0:
            raise ValueError(f"task {task!r}: utility is the same ({values[0]:.6g}) for all {len(values)} fit "
                             "subsets in subset_outcomes (zero variance), so no surrogate can rank subsets for it; "
                             "check the retraining recipe (steps, lr) or leave the task out")
    position = {eid: i for i, eid in enumerate(sketches["example_id"].to_list())}
    rows, cols = [], []
    for r, members in enumerate(plan["members"].to_list()):
        rows += [r] * len(members)
        cols += [position[m] for m in members]
    membership = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(plan.height, sketches.height))
    data = SubsetData(
        subset_ids=plan["subset_id"].to_numpy(), roles=plan["role"].to_numpy(),
        samplers=plan["sampler"].to_numpy(), sizes=plan["size"].to_numpy(), membership=membership,
        utility=plan.select(tasks).to_numpy().astype(np.float64),
        pool_sketch=sketch_matrix(sketches["sketch"], np.float32),
        task_sketch=sketch_matrix(task_frame["sketch"]), tasks=tasks,
        sketch_blocks=len(json.loads(sketches["sketch_config"][0]).get("checkpoint_steps", [0])))
    return data, sketches, plan


def method_params(store: DeltaStore, method: str) -> tuple[str, list[str], list[dict]]:
    """Returns (surrogate id, tasks, the fitted params of `method` per task), after checking that the
    surrogate tables come from one fit and the sketches and the fit from one reference model."""
    check_one_surrogate(store)
    check_one_model(store)
    surrogates = store.read("surrogates").filter(pl.col("method") == method).sort("task")
    if surrogates.height == 0:
        raise ValueError(f"no {method!r} rows in the surrogates table; materialise surrogates first")
    return (surrogates["surrogate_id"][0], surrogates["task"].to_list(),
            [json.loads(p) for p in surrogates["params"].to_list()])


def checkpoint_fingerprint(checkpoints: dict[int, dict[str, torch.Tensor]]) -> str:
    """The model version of a set of checkpoints: a hash over every step's parameters."""
    return state_fingerprint({f"step{step:06d}.{name}": p for step, state in checkpoints.items()
                              for name, p in state.items()})


def reference_row(store: DeltaStore, workload: Workload) -> dict:
    row = store.read("reference_models").row(0, named=True)
    expected = json.dumps(workload.config(), sort_keys=True)
    if row["workload"] != expected:
        raise ValueError(f"the reference model {row['model_version']} was trained for workload {row['workload']}, "
                         f"but the workload is now {expected}; rematerialise reference_model")
    return row


def reference_files(row: dict, column: str) -> list[dict]:
    """The file entries of one reference_models row's `state` or `checkpoints` column; ValueError when
    the row predates checkpoint files (the parameters in one binary cell, or no checkpoints at all)."""
    entries = row.get(column)
    if entries is None or isinstance(entries, bytes):
        raise ValueError(f"reference_models (version {row['model_version']}) holds no `{column}` files (it was "
                         "written before checkpoints were stored as files beside the tables); rematerialise "
                         "reference_model")
    return entries


def load_reference_model(store: DeltaStore, workload: Workload) -> tuple[str, dict[str, torch.Tensor]]:
    """Returns (model_version, the final warm-up parameters on the workload's device); CheckpointFileError
    naming the file when one is missing or differs from its recorded sha256."""
    row = reference_row(store, workload)
    return row["model_version"], read_state(checkpoint_location(store), reference_files(row, "state"),
                                            workload.device)


def load_reference_checkpoints(store: DeltaStore, workload: Workload) -> tuple[str, list[tuple[int, dict]]]:
    """Returns (model_version, [(step, parameters)] in step order): the checkpoints every gradient is
    sketched at, on the workload's device (CheckpointFileError as load_reference_model)."""
    row = reference_row(store, workload)
    by_step: dict[int, list[dict]] = {}
    for entry in reference_files(row, "checkpoints"):
        by_step.setdefault(entry["step"], []).append(entry)
    location = checkpoint_location(store)
    return row["model_version"], [(step, read_state(location, files, workload.device))
                                  for step, files in sorted(by_step.items())]


def outcome_recipe(outcomes: pl.DataFrame) -> Recipe:
    """Returns the one retraining recipe of `outcomes` (subset_outcomes rows).

    Raises ValueError naming the batches of each recipe, and the fields that differ, when the
    rows disagree: validation would otherwise retrain with whichever recipe came first.
    """
    by_recipe = (outcomes.group_by("recipe").agg(pl.col("batch").unique().sort())
                 .with_columns(first=pl.col("batch").list.first()).sort("first"))
    if by_recipe.height > 1:
        parsed = [json.loads(r) for r in by_recipe["recipe"]]
        fields = sorted({k for p in parsed for k in p
                         if len({json.dumps(q.get(k), sort_keys=True) for q in parsed}) > 1})
        groups = "; ".join(f"batches {batches} have " + ", ".join(f"{k}={p.get(k)!r}" for k in fields)
                           for batches, p in zip(by_recipe["batch"].to_list(), parsed))
        raise ValueError(f"subset_outcomes rows disagree on the retraining recipe ({', '.join(fields)}): {groups}. "
                         "Retrain those batches with one recipe (materialise subset_outcomes for them with the "
                         "same [retrain] and [workload] settings) before validating")
    recipe_json = json.loads(outcomes["recipe"][0])
    return Recipe(**{k: recipe_json[k] for k in Recipe.__dataclass_fields__})


def subset_utilities(store: DeltaStore, sketches: pl.DataFrame, tasks: list[str],
                     role: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """([pool rows of each subset], sizes, (m, T) dev utility averaged over repeats) of the `role` subsets.

    Pool rows index `sketches` (sorted by example_id); tasks in the order given.
    """
    plan = store.read("subset_plan").filter(pl.col("role") == role).sort("subset_id")
    mean = (store.read("subset_outcomes").group_by("subset_id", "task").agg(pl.col("utility").mean())
            .pivot(on="task", index="subset_id", values="utility"))
    plan = plan.join(mean, on="subset_id", how="inner").sort("subset_id")
    position = {eid: i for i, eid in enumerate(sketches["example_id"].to_list())}
    members = [np.array([position[m] for m in ids]) for ids in plan["members"].to_list()]
    return members, plan["size"].to_numpy(), plan.select(tasks).to_numpy().astype(np.float64)

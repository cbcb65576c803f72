"""The pipeline's stages as plain functions: read input tables, compute, write output tables.

One function per asset of DESIGN §4. Each returns a `StageResult` (tables written with
their versions, row counts and schemas; metrics; small artifacts) that the Dagster layer
turns into materialisation metadata and an MLflow run. Nothing here imports Dagster, so
every stage runs and is tested on its own.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from . import corpus as corpus_lib
from .config import CorpusParams, ReferenceParams, RetrainParams, SketchParams, ValidationParams, WorkloadParams
from .metrics import nan_mean, noise_ceiling, spearman
from .mixture import (MixtureObjective, MixtureParams, domain_stats, natural_mixture, optimise_mixture,
                      sample_mixture, uniform_mixture)
from .plan import PlanParams, sample_subset_plan
from .retrain import Recipe, StackedTrainer, retrain_subsets, task_losses, unstack
from .select import (SelectionParams, label_quota, protected_grasp_selection, random_selection, task_weight_vector,
                     top_k)
from .sketch import CheckpointSketcher
from .storage import DeltaStore, PinnedReads, table_schema
from .surrogate import (GradDot, SubsetData, SurrogateParams, fidelity_by_fit_budget, fit_surrogates,
                        holdout_fidelity)
from .workload import Workload, make_workload, state_fingerprint


@dataclass
class TableWrite:
    table: str
    version: int
    rows: int
    schema: dict[str, str]


@dataclass
class StageResult:
    writes: list[TableWrite] = field(default_factory=list)
    reads: dict[str, int] = field(default_factory=dict)  # table -> Delta version read (lineage)
    metrics: dict = field(default_factory=dict)
    artifacts: dict[str, dict] = field(default_factory=dict)  # file name -> JSON payload
    figures: dict = field(default_factory=dict)  # file name -> matplotlib figure

    def write(self, store: DeltaStore, table: str, frame: pl.DataFrame) -> int:
        """Replaces the whole table; returns its new version."""
        version = store.write(table, frame)
        self.writes.append(TableWrite(table, version, frame.height, table_schema(frame)))
        return version

    def write_partitions(self, store: DeltaStore, table: str, frame: pl.DataFrame) -> int:
        """Replaces the partitions present in `frame`; returns the table's new version."""
        version = store.write_partitions(table, frame)
        self.writes.append(TableWrite(table, version, frame.height, table_schema(frame)))
        return version


def stage(fn):
    """Runs a stage against pinned reads and records the input versions in `result.reads`."""

    @functools.wraps(fn)
    def run(store: DeltaStore, *args, **kwargs) -> StageResult:
        pinned = PinnedReads(store)
        result = fn(pinned, *args, **kwargs)
        written = {w.table for w in result.writes}
        result.reads = {t: v for t, v in sorted(pinned.versions.items()) if t not in written}
        return result

    return run


def build_workload(params: WorkloadParams) -> Workload:
    if params.torch_threads:
        torch.set_num_threads(params.torch_threads)
    return make_workload(params.name, device=params.device, **params.model_params())


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------- corpus

@stage
def build_corpus(store: DeltaStore, params: CorpusParams, example_bytes: int,
                 workload: Workload | None = None) -> StageResult:
    """Reads the corpus, cuts examples, writes `corpus_shards` (the pool) and `task_sets`.

    The workload may bring its own corpus (`default_corpus`, used when `corpus_path` is
    empty), keep documents whole (`whole_documents`: one row = one example, e.g. an image)
    and label examples (`example_labels`: a `label` column in the pool).
    """
    default = getattr(workload, "default_corpus", None)
    documents, report = corpus_lib.load_documents(params.corpus_path or default)
    examples = corpus_lib.cut_examples(documents, example_bytes,
                                       whole_documents=bool(getattr(workload, "whole_documents", False)))
    pool, tasks = corpus_lib.split_pool_and_tasks(
        examples, task_examples_per_domain=params.task_examples_per_domain,
        pool_examples_per_domain=params.pool_examples_per_domain or None,
        shard_size=params.shard_size, seed=params.seed)
    if getattr(workload, "example_labels", None) is not None:  # classification: selections balance labels
        pool = pool.with_columns(label=pl.Series(workload.example_labels(pool["text"].to_list()), dtype=pl.Utf8))
    result = StageResult()
    result.write(store, "corpus_shards", pool)
    result.write(store, "task_sets", tasks)
    result.metrics = {
        "documents": report.documents, "replaced_bytes": report.replaced_bytes,
        "examples_cut": examples.height, "pool_examples": pool.height, "task_examples": tasks.height,
        "domains": pool["domain"].n_unique(), "shards": pool["shard"].n_unique(),
        "corpus_content_sha1": _digest(sorted(pool["content_sha1"].to_list())),
    }
    result.artifacts["ingest_report.json"] = {
        "files": list(report.files), "documents_per_domain": report.domains,
        "pool_per_domain": dict(pool.group_by("domain").len().sort("domain").iter_rows()),
    }
    return result


def _pool(store: DeltaStore) -> pl.DataFrame:
    """Returns the pool sorted by example_id: its row order indexes every pool matrix."""
    return store.read("corpus_shards").sort("example_id")


def _tasks(store: DeltaStore) -> tuple[pl.DataFrame, list[str], np.ndarray]:
    """Returns (task_sets sorted by task, example_id; task names; task index of each row)."""
    frame = store.read("task_sets").sort("task", "example_id")
    names = sorted(frame["task"].unique().to_list())
    index = np.searchsorted(np.asarray(names), frame["task"].to_numpy())
    return frame, names, index


# ---------------------------------------------------------------- reference model

def _state_bytes(params: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save({n: p.detach().cpu() for n, p in params.items()}, buffer)
    return buffer.getvalue()


def _checkpoint_fingerprint(checkpoints: dict[int, dict[str, torch.Tensor]]) -> str:
    """The model version of a set of checkpoints: a hash over every step's parameters."""
    return state_fingerprint({f"step{step:06d}.{name}": p for step, state in checkpoints.items()
                              for name, p in state.items()})


@stage
def train_reference_model(store: DeltaStore, workload: Workload, params: ReferenceParams) -> StageResult:
    """Warms the proxy up on a seeded pool sample, keeping the parameters at `sketch_steps`;
    writes `reference_models` (one row: the checkpoints and the final θ)."""
    steps = sorted(set(params.sketch_steps))
    if not steps or steps[0] < 0 or steps[-1] > params.steps or len(steps) != len(params.sketch_steps):
        raise ValueError(f"reference.sketch_steps {list(params.sketch_steps)} must be distinct steps in "
                         f"0..{params.steps} (reference.steps), at least one")
    pool = _pool(store)
    rng = np.random.default_rng(params.seed)
    rows = np.sort(rng.choice(pool.height, size=min(params.warmup_examples, pool.height), replace=False))
    inputs = workload.encode(pool["text"].to_list())
    recipe = Recipe(steps=params.steps, batch_size=params.batch_size, lr=params.lr,
                    init_seed=params.seed, data_order_seed=params.seed)
    began = time.perf_counter()
    trainer = StackedTrainer(workload, recipe)
    snapshots: dict = dict.fromkeys(steps)
    theta = unstack(trainer.train(inputs, [rows], [(params.seed, 0)], snapshots=snapshots), 0)
    checkpoints = {step: unstack(snapshots[step], 0) for step in steps}
    seconds = time.perf_counter() - began
    warmup_loss = float(trainer.example_losses({n: p[None] for n, p in theta.items()}, inputs[rows]).mean())
    version = _checkpoint_fingerprint(checkpoints)
    frame = pl.DataFrame({
        "model_version": [version], "workload": [json.dumps(workload.config(), sort_keys=True)],
        "parameters": [sum(p.numel() for p in theta.values())], "warmup_loss": [warmup_loss],
        "recipe": [json.dumps(recipe.to_dict())], "state": [_state_bytes(theta)],
        "sketch_steps": [steps], "checkpoints": [_checkpoints_bytes(checkpoints)], "seconds": [seconds],
    }, schema_overrides={"parameters": pl.Int64, "state": pl.Binary, "checkpoints": pl.Binary,
                         "sketch_steps": pl.List(pl.Int64)})
    result = StageResult()
    result.write(store, "reference_models", frame.with_columns(path=pl.lit(store.uri("reference_models"))))
    result.metrics = {"warmup_loss": warmup_loss, "parameters": int(frame["parameters"][0]),
                      "model_version": version, "sketch_steps": steps}
    return result


def _checkpoints_bytes(checkpoints: dict[int, dict[str, torch.Tensor]]) -> bytes:
    buffer = io.BytesIO()
    torch.save({step: {n: p.detach().cpu() for n, p in state.items()} for step, state in checkpoints.items()},
               buffer)
    return buffer.getvalue()


def _reference_row(store: DeltaStore, workload: Workload) -> dict:
    row = store.read("reference_models").row(0, named=True)
    expected = json.dumps(workload.config(), sort_keys=True)
    if row["workload"] != expected:
        raise ValueError(f"the reference model {row['model_version']} was trained for workload {row['workload']}, "
                         f"but the workload is now {expected}; rematerialise reference_model")
    return row


def load_reference_model(store: DeltaStore, workload: Workload) -> tuple[str, dict[str, torch.Tensor]]:
    """Returns (model_version, the final warm-up parameters on the workload's device)."""
    row = _reference_row(store, workload)
    state = torch.load(io.BytesIO(row["state"]), map_location=workload.device, weights_only=True)
    return row["model_version"], state


def load_reference_checkpoints(store: DeltaStore, workload: Workload) -> tuple[str, list[tuple[int, dict]]]:
    """Returns (model_version, [(step, parameters)]): the checkpoints every gradient is sketched at."""
    row = _reference_row(store, workload)
    if row.get("checkpoints") is None:
        raise ValueError(f"reference_models (version {row['model_version']}) predates checkpoint sketching "
                         "(no `checkpoints` column); rematerialise reference_model")
    states = torch.load(io.BytesIO(row["checkpoints"]), map_location=workload.device, weights_only=True)
    return row["model_version"], sorted(states.items())


# ---------------------------------------------------------------- sketches

def _select_partitions(frame: pl.DataFrame, column: str, keys: list[str] | None, table: str) -> pl.DataFrame:
    """The rows of partitions `keys` (all rows for None); unknown keys are an error naming them."""
    if keys is None:
        return frame
    unknown = sorted(set(keys) - set(frame[column].to_list()))
    if unknown:
        raise ValueError(f"{column} key(s) {unknown} are not in {table} (it has: "
                         f"{sorted(frame[column].unique().to_list())}); rematerialise {table}")
    return frame.filter(pl.col(column).is_in(keys))


def make_sketcher(workload: Workload, checkpoints: list[tuple[int, dict]], params: SketchParams) -> CheckpointSketcher:
    return CheckpointSketcher.build(workload, checkpoints, params.projection, params.k, params.seed,
                                    params.chunk_size, storage_dtype=params.storage_dtype,
                                    nonzeros=params.nonzeros, factor_dim=params.factor_dim)


@stage
def compute_gradient_sketches(store: DeltaStore, workload: Workload, params: SketchParams,
                              shards: list[str] | None = None) -> StageResult:
    """Sketches every pool example's gradient at the reference checkpoints, shard by shard;
    writes `gradient_sketches`.

    With `shards` (shard keys of corpus_shards) only those shards are sketched and exactly
    their partitions replaced, so shards can run on separate workers and a crashed shard
    reruns alone; otherwise every shard, replacing the table (dropping vanished shards).
    """
    version, checkpoints = load_reference_checkpoints(store, workload)
    sketcher = make_sketcher(workload, checkpoints, params)
    pool = _select_partitions(_pool(store), "shard", shards, "corpus_shards")
    parts = []
    for (shard,), shard_rows in pool.group_by("shard", maintain_order=True):
        began = time.perf_counter()
        out = sketcher.sketch_examples(workload.encode(shard_rows["text"].to_list()))
        per_example = (time.perf_counter() - began) / shard_rows.height
        parts.append(pl.DataFrame({
            "example_id": shard_rows["example_id"], "shard": shard_rows["shard"],
            "domain": shard_rows["domain"],
            "sketch": pl.Series(out.sketch.astype(np.float32).tolist(), dtype=pl.List(pl.Float32)),
            "grad_norm": out.grad_norm.astype(np.float64), "loss": out.loss.astype(np.float64),
            "seconds": per_example,
        }))
    frame = pl.concat(parts).sort("example_id").with_columns(
        sketch_config=pl.lit(sketcher.config(version)), model_version=pl.lit(version))
    result = StageResult()
    if shards is None:
        result.write(store, "gradient_sketches", frame)
    else:
        result.write_partitions(store, "gradient_sketches", frame)
    sketches = np.asarray(frame["sketch"].to_list(), dtype=np.float32)
    result.metrics = {"examples": frame.height, "shards": frame["shard"].n_unique(), "k": params.k, "dim": sketcher.dim,
                      "projection": params.projection, "finite": bool(np.isfinite(sketches).all()),
                      "mean_grad_norm": float(frame["grad_norm"].mean()), "mean_loss": float(frame["loss"].mean()),
                      "examples_per_second": frame.height / max(float(frame["seconds"].sum()), 1e-9),
                      "model_version": version}
    return result


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
    pool = _pool(store)
    if not sketches["example_id"].equals(pool["example_id"]):
        missing = pool.filter(~pl.col("example_id").is_in(sketches["example_id"].implode()))
        raise ValueError(f"gradient_sketches does not cover corpus_shards: {missing.height} pool examples have no "
                         f"sketch (shards {sorted(missing['shard'].unique().to_list())[:5]}), {sketches.height} "
                         f"sketches for {pool.height} pool examples; materialise the missing gradient_sketches "
                         "partitions (or rematerialise all of them after corpus_shards changed)")
    return sketches


@stage
def compute_task_sketches(store: DeltaStore, workload: Workload, chunk_size: int = 64) -> StageResult:
    """Sketches ∇θ of each task's mean loss at the reference checkpoints; writes `task_sketches`.

    The projection (kind, k, seed) is read from `gradient_sketches`' sketch_config, so task
    and pool sketches always live in the same space.
    """
    version, checkpoints = load_reference_checkpoints(store, workload)
    pool_config = json.loads(pool_sketches(store)["sketch_config"][0])
    if pool_config["model_version"] != version:
        raise ValueError(f"gradient_sketches were computed at model {pool_config['model_version']}, the "
                         f"reference model is now {version}; rematerialise gradient_sketches first")
    sketcher = CheckpointSketcher.from_config(workload, checkpoints, pool_config, chunk_size)
    frame, names, index = _tasks(store)
    inputs = workload.encode(frame["text"].to_list())
    rows = []
    for t, task in enumerate(names):
        began = time.perf_counter()
        q, loss = sketcher.sketch_mean_gradient(inputs[torch.as_tensor(index == t)])
        rows.append({"task": task, "sketch": q.astype(np.float32).tolist(), "loss": loss,
                     "seconds": time.perf_counter() - began})
    out = pl.DataFrame(rows, schema={"task": pl.Utf8, "sketch": pl.List(pl.Float32), "loss": pl.Float64,
                                     "seconds": pl.Float64})
    out = out.with_columns(sketch_config=pl.lit(sketcher.config(version)), model_version=pl.lit(version))
    result = StageResult()
    result.write(store, "task_sketches", out)
    result.metrics = {"tasks": len(names), **{f"loss.{r['task']}": r["loss"] for r in rows}}
    return result


# ---------------------------------------------------------------- subsets and retraining

@stage
def plan_subsets(store: DeltaStore, params: PlanParams) -> StageResult:
    plan = sample_subset_plan(store.read("corpus_shards").select("example_id", "domain"), params)
    result = StageResult()
    result.write(store, "subset_plan", plan)
    counts = plan.group_by("sampler", "role").len().sort("sampler", "role")
    result.metrics = {f"subsets.{s}.{r}": n for s, r, n in counts.iter_rows()}
    result.metrics["mean_size"] = float(plan["size"].mean())
    return result


def _encoded_pool_and_tasks(store: DeltaStore, workload: Workload):
    pool = _pool(store)
    tasks_frame, names, index = _tasks(store)
    return (pool, workload.encode(pool["text"].to_list()), workload.encode(tasks_frame["text"].to_list()),
            names, index)


@stage
def retrain_outcomes(store: DeltaStore, workload: Workload, params: RetrainParams,
                     batches: list[str] | None = None) -> StageResult:
    """Retrains the recipe on planned subsets; writes `subset_outcomes` (one row per task).

    With `batches` (retraining-batch keys of subset_plan), only those batches are trained
    and exactly their partitions are replaced; otherwise every batch, replacing the table.
    """
    pool, pool_inputs, task_inputs, names, task_index = _encoded_pool_and_tasks(store, workload)
    full_plan = store.read("subset_plan").sort("subset_id")
    plan = _select_partitions(full_plan, "batch", batches, "subset_plan")
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    subsets = []
    for subset_id, members in plan.select("subset_id", "members").iter_rows():
        missing = [m for m in members if m not in position]
        if missing:
            raise ValueError(f"subset_plan subset {subset_id} names example_id {missing[0]} that is not in "
                             "corpus_shards; rematerialise subset_plan after corpus_shards")
        subsets.append((subset_id, np.array([position[m] for m in members])))
    recipe = Recipe(steps=params.steps, batch_size=params.batch_size, lr=params.lr, optimizer=params.optimizer,
                    init_seed=params.init_seed, data_order_seed=params.data_order_seed)
    outcomes = retrain_subsets(workload, recipe, pool_inputs, subsets, task_inputs, task_index, names,
                               repeats=params.repeats, models_per_batch=params.models_per_batch)
    batch_of = dict(plan.select("subset_id", "batch").iter_rows())
    members_of = dict(plan.select("subset_id", "members").iter_rows())
    recipe_json = json.dumps({**recipe.to_dict(), **workload.config()}, sort_keys=True)
    rows = [{"subset_id": o.subset_id, "task": task, "loss": float(o.task_loss[t]),
             "utility": -float(o.task_loss[t]), "repeat": o.repeat, "steps": recipe.steps,
             "seconds": o.seconds, "batch": batch_of[o.subset_id], "recipe": recipe_json,
             "members_sha1": members_digest(members_of[o.subset_id])}
            for o in outcomes for t, task in enumerate(names)]
    frame = pl.DataFrame(rows, schema_overrides={"subset_id": pl.Int64, "repeat": pl.Int64, "steps": pl.Int64})
    if not np.isfinite(frame["loss"].to_numpy()).all():
        bad = frame.filter(~pl.col("loss").is_finite()).row(0, named=True)
        raise FloatingPointError(f"retraining diverged: subset {bad['subset_id']} task {bad['task']} "
                                 f"loss={bad['loss']}; lower retrain lr ({params.lr})")
    result = StageResult()
    if batches is None:
        result.write(store, "subset_outcomes", frame)
    else:
        result.write_partitions(store, "subset_outcomes", frame)
    result.metrics = {"subsets": len(subsets), "rows": frame.height, "batches": frame["batch"].n_unique(),
                      "seconds_per_subset": float(np.mean([o.seconds for o in outcomes])),
                      **noise_ceilings(store.read("subset_outcomes"), full_plan)}
    return result


def members_digest(members) -> str:
    """Fingerprint of a subset's members: ties each outcome row to the plan it was trained on."""
    return hashlib.sha1(np.asarray(members, dtype=np.int64).tobytes()).hexdigest()[:16]


def noise_ceilings(outcomes: pl.DataFrame, plan: pl.DataFrame) -> dict[str, float]:
    """Per sampler (mean over tasks), when ≥ 2 repeats exist: `repeat_reliability` = Spearman ρ
    between repeats 0 and 1 of the same subsets, and `noise_ceiling` = the best fidelity any
    surrogate can reach against the mean over all repeats (what surrogates are scored on)."""
    repeats = outcomes["repeat"].n_unique()
    if repeats < 2:
        return {}
    joined = outcomes.join(plan.select("subset_id", "sampler"), on="subset_id")
    ceilings = {}
    for sampler in sorted(joined["sampler"].unique().to_list()):
        per_task = []
        for task in sorted(joined["task"].unique().to_list()):
            wide = (joined.filter((pl.col("sampler") == sampler) & (pl.col("task") == task) & (pl.col("repeat") < 2))
                    .pivot(on="repeat", index="subset_id", values="utility").drop_nulls())
            per_task.append(spearman(wide["0"].to_numpy(), wide["1"].to_numpy()))
        reliability = nan_mean(per_task)
        ceilings[f"repeat_reliability.{sampler}"] = reliability
        ceilings[f"noise_ceiling.{sampler}"] = noise_ceiling(reliability, repeats)
    return ceilings


# ---------------------------------------------------------------- surrogates

def load_subset_data(store: DeltaStore) -> tuple[SubsetData, pl.DataFrame, pl.DataFrame]:
    """Joins sketches, plan and outcomes into a SubsetData; returns it with the sketch and plan frames."""
    sketches = pool_sketches(store)
    task_frame = store.read("task_sketches").sort("task")
    plan = store.read("subset_plan").sort("subset_id")
    outcomes = store.read("subset_outcomes")
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
        pool_sketch=np.asarray(sketches["sketch"].to_list(), dtype=np.float32),
        task_sketch=np.asarray(task_frame["sketch"].to_list(), dtype=np.float64), tasks=tasks,
        sketch_blocks=len(json.loads(sketches["sketch_config"][0]).get("checkpoint_steps", [0])))
    return data, sketches, plan


@stage
def fit_surrogate_tables(store: DeltaStore, params: SurrogateParams, mlflow_run_id: str = "") -> StageResult:
    """Chooses and fits every surrogate method; writes `surrogates`, `surrogate_candidates`,
    `surrogate_predictions`."""
    data, sketches, plan = load_subset_data(store)
    fitted = fit_surrogates(data, params)
    costs = artifact_seconds(store, data, fitted)
    by_budget = fidelity_by_fit_budget(data, params, params.fidelity_fit_budgets)
    surrogate_id = "sg-" + _digest(asdict(params), sketches["sketch_config"][0],
                                   data.utility.tobytes(), plan["members"].to_list())
    surrogate_rows, candidate_rows, prediction_frames, fidelity = [], [], [], {}
    for method, fm in fitted.items():
        report = holdout_fidelity(data, fm.predicted)
        fidelity[method] = report
        chosen = fm.chosen
        for t, task in enumerate(data.tasks):
            # the task's utility spread over fit subsets: the scale selection.task_scale divides by
            params_t = {**fm.params[t], "fit_utility_std": float(np.std(data.utility[data.fit_rows, t], ddof=1))}
            if method == "datamodel":  # weights are indexed by pool row: keep their example ids
                params_t = {**params_t, "example_ids": sketches["example_id"].to_list()}
            surrogate_rows.append({
                "surrogate_id": surrogate_id, "method": method, "task": task,
                "params": json.dumps(params_t, sort_keys=True), "config": json.dumps(chosen.config, sort_keys=True),
                "cv_mean": chosen.cv_mean, "cv_lcb": chosen.cv_lcb,
                "holdout_spearman": report["per_task"][task]["spearman"],
                "holdout_pearson": report["per_task"][task]["pearson"], "mlflow_run_id": mlflow_run_id,
                "artifact_seconds": costs[method]})
            prediction_frames.append(pl.DataFrame({
                "surrogate_id": surrogate_id, "method": method, "subset_id": data.subset_ids, "task": task,
                "role": data.roles, "sampler": data.samplers, "predicted": fm.predicted[:, t],
                "actual": data.utility[:, t]}))
        candidate_rows += [{"surrogate_id": surrogate_id, "method": method, "candidate": c.candidate,
                            "config": json.dumps(c.config, sort_keys=True), "cv_mean": c.cv_mean,
                            "cv_sd": c.cv_sd, "cv_lcb": c.cv_lcb, "chosen": c.chosen,
                            "fold_scores": json.dumps(c.fold_scores)} for c in fm.candidates]
    result = StageResult()
    result.write(store, "surrogates", pl.DataFrame(surrogate_rows, schema_overrides={
        "cv_mean": pl.Float64, "cv_lcb": pl.Float64, "holdout_spearman": pl.Float64, "holdout_pearson": pl.Float64,
        "artifact_seconds": pl.Float64}))
    result.write(store, "surrogate_candidates", pl.DataFrame(candidate_rows, schema_overrides={
        "candidate": pl.Int64, "cv_mean": pl.Float64, "cv_sd": pl.Float64, "cv_lcb": pl.Float64}))
    result.write(store, "surrogate_predictions", pl.concat(prediction_frames).with_columns(
        pl.col("subset_id").cast(pl.Int64)))
    ceilings = noise_ceilings(store.read("subset_outcomes"), plan)
    result.write(store, "fidelity_report", fidelity_report_frame(
        surrogate_id, fidelity, by_budget, len(data.fit_rows), costs, ceilings))
    result.metrics = {"surrogate_id": surrogate_id}
    for method, report in fidelity.items():
        result.metrics[f"holdout_spearman.{method}"] = report["mean_spearman"]
        for sampler, value in report["per_sampler"].items():
            result.metrics[f"holdout_spearman.{method}.{sampler}"] = value
        result.metrics[f"cv_lcb.{method}"] = fitted[method].chosen.cv_lcb
        result.metrics[f"holdout_pearson.{method}"] = report["mean_pearson"]
        result.metrics[f"artifact_seconds.{method}"] = costs[method]
    result.metrics.update({f"fit_budget_{row['fit_subsets']}.holdout_spearman.{row['method']}": row["holdout_spearman"]
                           for row in by_budget})
    result.artifacts["fidelity.json"] = fidelity
    result.artifacts["fidelity_by_fit_budget.json"] = {"rows": by_budget, "all_fit_subsets": len(data.fit_rows)}
    result.artifacts["artifact_seconds.json"] = costs
    result.artifacts["grasp_chosen_config.json"] = fitted["grasp"].chosen.config
    result.figures["grasp_predicted_vs_actual.png"] = _scatter_figure(data, fitted["grasp"].predicted)
    if by_budget:
        result.figures["fidelity_by_fit_budget.png"] = _budget_figure(
            by_budget, {m: fidelity[m]["mean_spearman"] for m in fidelity}, len(data.fit_rows))
    return result


def fidelity_report_frame(surrogate_id: str, fidelity: dict, by_budget: list[dict], all_fit: int,
                          costs: dict[str, float], ceilings: dict[str, float]) -> pl.DataFrame:
    """One row per (method, sampler regime or "all", number of fit subsets): holdout fidelity
    next to the regime's noise ceiling and the method's artifact cost."""
    rows = []
    for method, report in fidelity.items():
        rows.append({"method": method, "sampler": "all", "fit_subsets": all_fit,
                     "holdout_spearman": report["mean_spearman"], "holdout_pearson": report["mean_pearson"]})
        rows += [{"method": method, "sampler": sampler, "fit_subsets": all_fit, "holdout_spearman": value,
                  "holdout_pearson": report["per_sampler_pearson"][sampler]}
                 for sampler, value in report["per_sampler"].items()]
    for row in by_budget:
        rows.append({"method": row["method"], "sampler": "all", "fit_subsets": row["fit_subsets"],
                     "holdout_spearman": row["holdout_spearman"], "holdout_pearson": None})
        rows += [{"method": row["method"], "sampler": key.split(".", 1)[1], "fit_subsets": row["fit_subsets"],
                  "holdout_spearman": value, "holdout_pearson": None}
                 for key, value in row.items() if key.startswith("holdout_spearman.")]
    return pl.DataFrame(rows, schema={"method": pl.Utf8, "sampler": pl.Utf8, "fit_subsets": pl.Int64,
                                      "holdout_spearman": pl.Float64, "holdout_pearson": pl.Float64}).with_columns(
        surrogate_id=pl.lit(surrogate_id),
        noise_ceiling=pl.col("sampler").replace_strict({s.split(".", 1)[1]: v for s, v in ceilings.items()
                                                        if s.startswith("noise_ceiling.")},
                                                       default=None, return_dtype=pl.Float64),
        artifact_seconds=pl.col("method").replace_strict(costs, default=None, return_dtype=pl.Float64))


def artifact_seconds(store: DeltaStore, data: SubsetData, fitted: dict) -> dict[str, float]:
    """Returns wall seconds to build what each method needs, from the times recorded in the tables.

    Sketch-based methods (grasp, grad_dot, trak) pay for the reference model and every pool and
    task sketch; every method pays for the retrainings of the fit subsets it is fitted on (all
    repeats) and for its own choice and fit.
    """
    sketching = (float(store.read("reference_models")["seconds"].sum())
                 + float(store.read("gradient_sketches")["seconds"].sum())
                 + float(store.read("task_sketches")["seconds"].sum()))
    fit_ids = set(data.subset_ids[data.fit_rows].tolist())
    retraining = float(store.read("subset_outcomes").filter(pl.col("subset_id").is_in(fit_ids))
                       .unique(["subset_id", "repeat"])["seconds"].sum())
    needs_sketches = {"grasp", "grad_dot", "trak"}
    return {method: (sketching if method in needs_sketches else 0.0) + retraining + fm.seconds
            for method, fm in fitted.items()}


def _budget_figure(rows: list[dict], full: dict[str, float], all_fit: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in sorted({r["method"] for r in rows}):
        points = sorted((r["fit_subsets"], r["holdout_spearman"]) for r in rows if r["method"] == method)
        points.append((all_fit, full[method]))
        ax.plot(*zip(*points), marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("fit subsets (retrainings)")
    ax.set_ylabel("holdout Spearman ρ (mean over tasks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _scatter_figure(data: SubsetData, predicted: np.ndarray):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = data.holdout_rows
    fig, axes = plt.subplots(1, len(data.tasks), figsize=(3 * len(data.tasks), 3), squeeze=False)
    for t, (ax, task) in enumerate(zip(axes[0], data.tasks)):
        for sampler in sorted(set(data.samplers[rows])):
            mine = rows[data.samplers[rows] == sampler]
            ax.scatter(predicted[mine, t], data.utility[mine, t], s=8, label=sampler)
        ax.set_title(task, fontsize=8)
        ax.set_xlabel("predicted utility")
    axes[0][0].set_ylabel("retrained utility (holdout)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def _method_params(store: DeltaStore, method: str) -> tuple[str, list[str], list[dict]]:
    surrogates = store.read("surrogates").filter(pl.col("method") == method).sort("task")
    if surrogates.height == 0:
        raise ValueError(f"no {method!r} rows in the surrogates table; materialise grasp_surrogate first")
    return (surrogates["surrogate_id"][0], surrogates["task"].to_list(),
            [json.loads(p) for p in surrogates["params"].to_list()])


# ---------------------------------------------------------------- curation

@stage
def curate_selections(store: DeltaStore, params: SelectionParams) -> StageResult:
    """Selects a budget of pool examples per method; writes `curated_selections`."""
    sketches = pool_sketches(store)
    pool = _pool(store)
    labelled = params.balance_labels and "label" in pool.columns
    pool = pool.select("example_id", "domain", "content_sha1", *(["label"] if labelled else []))
    sketches = sketches.join(pool, on=["example_id", "domain"], how="left")
    z = np.asarray(sketches["sketch"].to_list(), dtype=np.float64)
    q = np.asarray(store.read("task_sketches").sort("task")["sketch"].to_list(), dtype=np.float64)
    surrogate_id, tasks, grasp_params = _method_params(store, "grasp")
    weights = scaled_task_weights(grasp_params, tasks, task_weight_vector(tasks, dict(params.task_weights)),
                                  params.task_scale)
    budget = max(1, int(round(params.budget_fraction * len(z))))
    example_ids = sketches["example_id"].to_numpy()
    excluded = np.flatnonzero(np.isin(example_ids, np.asarray(params.exclude_example_ids, dtype=np.int64)))
    domains = sketches["domain"].to_numpy()
    quota_groups, quota, top_k_quota = domains, params.max_per_domain, {}  # grasp's per-domain quota
    if labelled:
        if params.max_per_domain:
            raise ValueError("selection.max_per_domain and selection.balance_labels cannot be combined yet; "
                             "set one of them to 0 / false")
        quota_groups = sketches["label"].to_numpy()
        quota = label_quota(quota_groups, budget)
        top_k_quota = {"groups": quota_groups, "max_per_group": quota}
    spread = np.array([p.get("fit_utility_std", 1.0) for p in grasp_params])
    selections = {"grasp": protected_grasp_selection(
        z, q, grasp_params, weights, budget, spread=spread, rounds=params.protect_rounds, rate=params.protect_rate,
        margin=params.protect_margin, trust_region=params.trust_region,
        method=params.greedy, domains=quota_groups, max_per_domain=quota,
        content=sketches["content_sha1"].to_numpy() if params.dedup_content else None, excluded=excluded)}
    protection = selections["grasp"].stats
    _, _, gd_params = _method_params(store, "grad_dot")
    gd_scores = GradDot.weighted_example_scores(z, q, gd_params, weights)
    selections["grad_dot"] = top_k(gd_scores, budget, excluded, **top_k_quota)
    _, _, dm_params = _method_params(store, "datamodel")
    dm_weights = {eid: 0.0 for eid in example_ids}
    for w, p in zip(weights, dm_params):
        for eid, value in zip(p["example_ids"], p["weights"]):
            dm_weights[eid] = dm_weights.get(eid, 0.0) + w * value
    selections["datamodel"] = top_k(np.array([dm_weights[e] for e in example_ids]), budget, excluded, **top_k_quota)
    for seed in params.random_seeds:
        selections[f"random-{seed}"] = random_selection(len(z), budget, seed, excluded)
    frames = []
    for method, selection in selections.items():
        frames.append(pl.DataFrame({
            "selection_id": f"{surrogate_id}-{method}", "method": method,
            "example_id": example_ids[selection.rows], "rank": np.arange(1, len(selection.rows) + 1),
            "gain": selection.gains.astype(np.float64), "domain": domains[selection.rows],
            "budget": budget}).with_columns(pl.col("rank").cast(pl.Int64), pl.col("budget").cast(pl.Int64)))
    full = pl.DataFrame({"selection_id": f"{surrogate_id}-full", "method": "full", "example_id": example_ids,
                         "rank": np.arange(1, len(z) + 1), "gain": 0.0, "domain": domains,
                         "budget": len(z)}).with_columns(pl.col("rank").cast(pl.Int64), pl.col("budget").cast(pl.Int64))
    frame = pl.concat(frames + [full])
    result = StageResult()
    result.write(store, "curated_selections", frame)
    composition = (frame.filter(pl.col("method") != "full").group_by("method", "domain").len()
                   .sort("method", "domain"))
    result.metrics = {"budget": budget, "pool": len(z), **({"label_quota": quota} if labelled else {}),
                      **{f"task_weight.{t}": float(w) for t, w in zip(tasks, weights)},
                      "protect_rounds": protection["protect_rounds"],
                      **{f"protected_weight.{t}": w for t, w in zip(tasks, protection["protected_weights"])},
                      **{f"predicted_gain_vs_random.{t}": g
                         for t, g in zip(tasks, protection["predicted_gain_vs_random"])},
                      **{f"domain_share.{m}.{d}": n / budget for m, d, n in composition.iter_rows()}}
    result.figures["selection_composition.png"] = _stacked_shares_figure(
        composition.with_columns(share=pl.col("len") / budget), "method", "share", "share of the selection")
    return result


def scaled_task_weights(grasp_params: list[dict], tasks: list[str], weights: np.ndarray,
                        task_scale: str) -> np.ndarray:
    """Task weights for selection: `weights`, divided by each task's utility spread for "utility_std".

    The spread (recorded by the surrogate fit as `fit_utility_std`) is the standard deviation
    over `fit` subsets of the repeat-mean retrained utility, so it never sees holdout
    outcomes; the result is normalised to sum to 1.
    """
    if task_scale == "none":
        return weights
    if task_scale != "utility_std":
        raise ValueError(f"selection.task_scale must be 'utility_std' or 'none', not {task_scale!r}")
    if any("fit_utility_std" not in p for p in grasp_params):
        raise ValueError("the surrogates table predates fit_utility_std; rematerialise grasp_surrogate, or set "
                         "selection.task_scale = 'none'")
    spread = np.array([p["fit_utility_std"] for p in grasp_params])
    flat = [t for t, s in zip(tasks, spread) if not np.isfinite(s) or s <= 0]
    if flat:
        raise ValueError(f"task(s) {flat} have no utility spread over the fit subsets, so selection.task_scale = "
                         "'utility_std' cannot scale them; set task_scale = 'none'")
    scaled = weights / spread
    return scaled / scaled.sum()


def _stacked_shares_figure(frame: pl.DataFrame, group: str, value: str, ylabel: str):
    """Stacked bars: one bar per `group` value, one segment per domain."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = sorted(frame[group].unique().to_list())
    domains = sorted(frame["domain"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(4, len(groups) * 0.9), 3.5))
    bottom = np.zeros(len(groups))
    for domain in domains:
        heights = np.array([frame.filter((pl.col(group) == g) & (pl.col("domain") == domain))[value].sum()
                            for g in groups])
        ax.bar(groups, heights, bottom=bottom, label=domain)
        bottom += heights
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    ax.legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- mixture

@stage
def optimise_mixtures(store: DeltaStore, params: MixtureParams) -> StageResult:
    """Optimises domain weights under GRASP; writes `mixture_weights` (natural, uniform, grasp)."""
    sketches = pool_sketches(store)
    z = np.asarray(sketches["sketch"].to_list(), dtype=np.float64)
    q = np.asarray(store.read("task_sketches").sort("task")["sketch"].to_list(), dtype=np.float64)
    surrogate_id, tasks, grasp_params = _method_params(store, "grasp")
    weights = task_weight_vector(tasks, dict(params.task_weights))
    stats = domain_stats(z, sketches["domain"].to_numpy())
    budget = max(1, int(round(params.budget_fraction * len(z))))
    objective = MixtureObjective(stats, q, grasp_params, weights, budget)
    caps = np.minimum(1.0, params.max_repeats * stats.counts / budget)
    mixtures = {"natural": natural_mixture(stats), "uniform": uniform_mixture(stats),
                "grasp": optimise_mixture(objective, caps)}
    rows = [{"mixture_id": f"{surrogate_id}-{method}", "method": method, "domain": domain,
             "weight": float(pi[d]), "predicted_utility": objective(pi), "budget": budget}
            for method, pi in mixtures.items() for d, domain in enumerate(stats.domains)]
    result = StageResult()
    result.write(store, "mixture_weights", pl.DataFrame(rows, schema_overrides={"budget": pl.Int64}))
    result.metrics = {f"predicted_utility.{m}": objective(pi) for m, pi in mixtures.items()}
    result.metrics.update({f"weight.grasp.{d}": float(w) for d, w in zip(stats.domains, mixtures["grasp"])})
    result.figures["mixture_weights.png"] = _stacked_shares_figure(
        pl.DataFrame(rows), "method", "weight", "domain weight")
    return result


# ---------------------------------------------------------------- validation

@stage
def validate_selections(store: DeltaStore, workload: Workload, params: ValidationParams = ValidationParams()) -> StageResult:
    """Retrains the outcome recipe on every selection and on a sample of every mixture, at the
    same budget; writes `selection_validation` (utility averaged over `repeats` data orders).

    Every selection trains with the same data-order seeds (common random numbers), so the
    differences between methods are not differences between seeds.
    """
    pool, pool_inputs, task_inputs, names, task_index = _encoded_pool_and_tasks(store, workload)
    recipe_json = json.loads(store.read("subset_outcomes")["recipe"][0])
    recipe = Recipe(**{k: recipe_json[k] for k in Recipe.__dataclass_fields__})
    selections = store.read("curated_selections").sort("selection_id", "rank")
    position = {eid: i for i, eid in enumerate(pool["example_id"].to_list())}
    grouped = selections.group_by("selection_id", "method", "budget", maintain_order=True).agg("example_id")
    groups = [(sid, method, budget, np.array([position[e] for e in ids]))
              for sid, method, budget, ids in grouped.iter_rows()]
    if store.exists("mixture_weights"):
        domains = pool["domain"].to_numpy()
        mixtures = store.read("mixture_weights").sort("mixture_id", "domain")
        for (mixture_id, method, budget), rows_ in mixtures.group_by("mixture_id", "method", "budget",
                                                                     maintain_order=True):
            drawn = sample_mixture(domains, rows_["weight"].to_numpy(), rows_["domain"].to_list(), budget,
                                   params.mixture_seed)
            groups.append((mixture_id, f"mixture-{method}", budget, drawn))
    trainer = StackedTrainer(workload, recipe)
    losses = np.zeros((len(groups), len(names)))
    for repeat in range(params.repeats):
        for lo in range(0, len(groups), params.models_per_batch):
            chunk = groups[lo:lo + params.models_per_batch]
            trained = trainer.train(pool_inputs, [g[3] for g in chunk],
                                    [(recipe.data_order_seed + repeat, 10_000_000)] * len(chunk))
            losses[lo:lo + len(chunk)] += task_losses(trainer.example_losses(trained, task_inputs),
                                                      task_index, names) / params.repeats
    rows = [{"selection_id": sid, "method": method, "task": task, "loss": float(losses[j, t]),
             "utility": -float(losses[j, t]), "budget": budget, "repeats": params.repeats}
            for j, (sid, method, budget, _) in enumerate(groups) for t, task in enumerate(names)]
    frame = pl.DataFrame(rows, schema_overrides={"budget": pl.Int64, "repeats": pl.Int64})
    result = StageResult()
    result.write(store, "selection_validation", frame)
    means = frame.group_by("method").agg(pl.col("utility").mean()).sort("method")
    result.metrics = {f"utility.{m}": u for m, u in means.iter_rows()}
    result.metrics.update(selection_comparison(frame))
    result.figures["utility_per_task.png"] = _utility_figure(frame)
    return result


def selection_comparison(frame: pl.DataFrame) -> dict[str, float]:
    """Returns the curation and mixture targets' figures from a selection_validation frame:
    share of tasks where grasp beats the mean of the random selections, and mean-utility gaps."""
    wide = frame.pivot(on="method", index="task", values="utility")
    randoms = [c for c in wide.columns if c.startswith("random-")]
    out = {}
    if "grasp" in wide.columns and randoms:
        random_mean = wide.select(randoms).mean_horizontal()
        out["grasp_beats_random_task_share"] = float((wide["grasp"] > random_mean).mean())
        out["grasp_minus_random_mean_utility"] = float((wide["grasp"] - random_mean).mean())
    if {"grasp", "grad_dot"} <= set(wide.columns):
        out["grasp_minus_grad_dot_mean_utility"] = float((wide["grasp"] - wide["grad_dot"]).mean())
    for other in ("natural", "uniform"):
        if {"mixture-grasp", f"mixture-{other}"} <= set(wide.columns):
            out[f"mixture_grasp_minus_{other}_mean_utility"] = float(
                (wide["mixture-grasp"] - wide[f"mixture-{other}"]).mean())
    return out


def _utility_figure(frame: pl.DataFrame):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = sorted(frame["method"].unique().to_list())
    tasks = sorted(frame["task"].unique().to_list())
    fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 1.2), 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        mine = frame.filter(pl.col("method") == method).sort("task")
        ax.bar(np.arange(len(tasks)) + i * width, mine["utility"].to_numpy(), width, label=method)
    ax.set_xticks(np.arange(len(tasks)) + 0.4, tasks, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("retrained utility (−loss)")
    ax.set_ylim(frame["utility"].min() - 0.1, frame["utility"].max() + 0.1)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


def stage_plan(store: DeltaStore, params, workload: Workload) -> list[tuple[str, object]]:
    """Returns (asset name, zero-argument call) for every stage, in dependency order: the
    whole graph without Dagster, for benchmarks and scripts."""
    return [
        ("corpus_shards", lambda: build_corpus(store, params.corpus, params.workload.example_bytes, workload)),
        ("reference_model", lambda: train_reference_model(store, workload, params.reference)),
        ("gradient_sketches", lambda: compute_gradient_sketches(store, workload, params.sketch)),
        ("task_sketches", lambda: compute_task_sketches(store, workload, params.sketch.chunk_size)),
        ("subset_plan", lambda: plan_subsets(store, params.plan)),
        ("subset_outcomes", lambda: retrain_outcomes(store, workload, params.retrain)),
        ("grasp_surrogate", lambda: fit_surrogate_tables(store, params.surrogate)),
        ("curated_selection", lambda: curate_selections(store, params.selection)),
        ("mixture_weights", lambda: optimise_mixtures(store, params.mixture)),
        ("selection_validation", lambda: validate_selections(store, workload, params.validation)),
    ]

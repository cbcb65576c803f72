"""Subset fidelity of GRASP, its baselines and peer libraries, side by side in one run.

    python bench/fidelity.py [--quick] [--profile smoke|demo] [--config FILE] [--no-peers]

Prints ONE JSON object on stdout (progress goes to stderr). Steps:

1. Runs the project's stages (corpus → reference model → sketches → subset plan →
   retraining → surrogates) into a temporary storage root, timing each stage.
2. Reads our methods' holdout Spearman (mean over tasks; per sampler), the noise ceiling and
   the artifact seconds from the `fidelity_report` table that `run_surrogates` wrote.
3. Peers on the SAME model, pool, tasks and holdout subsets: exports the pool and task
   inputs, the workload parameters and checkpoints of the proxy (the reference recipe from
   its initialisation, state dicts at evenly spaced steps; the last one is θ₀) into a temp
   dir and runs bench/fidelity_peers.py in the peer venv (bench/.peers-venv, see
   bench/peers/setup.sh), one subprocess per peer run: dattri TRAK with 1/5/10 checkpoints,
   dattri TracIn, and traker's TRAKer on CPU. Each returns pool × task scores; back here a
   subset's predicted utility is a + b·Σ_{i∈S} score_i, fitted on the fit subsets only
   (the project's `grad_dot` form), and scored on the holdout subsets with the project's
   `holdout_fidelity`. dattri TRAK's ridge λ (dattri's default 0 is ill-conditioned when the
   projection dimension nears the pool size) is chosen from a declared grid by the project's
   LCB protocol on the fit subsets; every grid point's attribution time is charged to it.
4. A peer's artifact cost = training its checkpoints (one run of the reference recipe: the
   seconds the reference_model stage recorded, the re-run's own time is reported too) +
   its attribution wall seconds + the retraining of the fit subsets that every method pays
   (all repeats, as the project's `artifact_seconds` counts it) + its fit; parts reported.

`--quick` runs a demo variant sized to finish within 15 minutes on 2 shared cores
(smaller pool and plan, shorter retraining, dattri TRAK with 1 and 5 checkpoints).
A peer that cannot run (missing venv, import error, timeout, the time budget) is reported
under `skipped` (and `peers.runs.<name>.skipped`) with the reason; the bench does not fail.
`--keep-dir DIR` keeps the storage root, the peer export and the peers' score matrices.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from grasp_pipeline import stages  # noqa: E402
from grasp_pipeline.config import load_params, with_overrides  # noqa: E402
from grasp_pipeline.evaluation.fidelity import budget_draws, draws_summary, holdout_fidelity, noise_ceilings  # noqa: E402
from grasp_pipeline.infra.storage import DeltaStore  # noqa: E402
from grasp_pipeline.surrogates import LinearOnScore, choose_by_lcb, fit_all_tasks  # noqa: E402
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, unstack  # noqa: E402
from grasp_pipeline.workloads import PAD, state_fingerprint  # noqa: E402

PEERS_PYTHON = REPO / "bench" / ".peers-venv" / "bin" / "python"
PEERS_SCRIPT = REPO / "bench" / "fidelity_peers.py"
OUR_METHODS = ("grasp", "grad_dot", "trak", "datamodel", "size")

# A demo variant (same corpus, same samplers, repeats = 2 for a noise ceiling) sized so that the
# whole bench, peers included, stays within 15 minutes on 2 shared CPU cores.
QUICK_OVERRIDES = {
    "corpus": {"task_examples_per_domain": 32, "pool_examples_per_domain": 80, "shard_size": 128},
    "reference": {"warmup_examples": 600, "steps": 120, "sketch_steps": [15, 30, 120]},
    "sketch": {"k": 128},
    "plan": {"uniform_fit": 32, "uniform_holdout": 16, "dirichlet_fit": 32, "dirichlet_holdout": 16},
    "retrain": {"steps": 30, "repeats": 2, "models_per_batch": 16},
    # down to 10 fit subsets, the protocol's floor (2 × cv_folds): fit_subsets_saved can then reach 96/10
    "surrogate": {"grasp_ridges": [0.1, 1.0], "datamodel_ridges": [1.0, 10.0, 100.0],
                  "fidelity_fit_budgets": [10, 16, 32, 64]},
}
SMOKE_REPEATS = {"retrain": {"repeats": 2}}  # the smoke profile has 1 repeat: no noise ceiling without 2


def log(message: str) -> None:
    print(f"[fidelity] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _clean(value):
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@contextlib.contextmanager
def _work_dir(keep: str | None, prefix: str):
    """A temporary directory, or `keep` (created empty, never deleted) with --keep-dir."""
    if keep:
        if os.path.exists(keep) and os.listdir(keep):
            raise SystemExit(f"--keep-dir: {keep} exists and is not empty")
        os.makedirs(keep, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield tmp


# ---------------------------------------------------------------- 1. the project's stages

def run_stages(store: DeltaStore, params, workload) -> dict[str, float]:
    # fidelity needs the graph up to the surrogates; the curation stages after it are not measured here
    plan = stages.stage_plan(store, params, workload)
    plan = plan[:[name for name, _ in plan].index("surrogates") + 1]
    seconds = {}
    for name, run in plan:
        began = time.perf_counter()
        run()
        seconds[name] = round(time.perf_counter() - began, 2)
        log(f"stage {name}: {seconds[name]} s (load {load_average()})")
    return seconds


# ---------------------------------------------------------------- 2. our methods

def our_fidelity(store: DeltaStore) -> dict:
    report = store.read("fidelity_report")
    all_fit = int(report["fit_subsets"].max())
    main = report.filter(pl.col("fit_subsets") == all_fit)
    holdout, pearson, artifact = {}, {}, {}
    for method in OUR_METHODS:
        rows = main.filter(pl.col("method") == method)
        holdout[method] = {s: v for s, v in rows.select("sampler", "holdout_spearman").iter_rows()}
        pearson[method] = {s: v for s, v in rows.select("sampler", "holdout_pearson").iter_rows()}
        artifact[method] = float(rows["artifact_seconds"][0])
    ceilings = {s: v for s, v in main.filter(pl.col("sampler") != "all").select("sampler", "noise_ceiling")
                .unique("sampler").sort("sampler").iter_rows()}
    by_budget: dict = {}
    for method, _sampler, budget, value in report.filter(pl.col("sampler") == "all").select(
            "method", "sampler", "fit_subsets", "holdout_spearman").iter_rows():
        by_budget.setdefault(method, {})[int(budget)] = value
    return {"all_fit_subsets": all_fit, "holdout_spearman": holdout, "holdout_pearson": pearson,
            "artifact_seconds": artifact, "noise_ceiling": ceilings, "by_fit_subsets": by_budget,
            "table": report.sort("method", "fit_subsets", "sampler").drop("surrogate_id").to_dicts()}


def fit_subsets_saved(by_budget: dict, method: str = "grasp", reference: str = "datamodel") -> float | None:
    """`reference`'s fit subsets at its largest budget over the fewest at which `method` matches
    that fidelity (its holdout Spearman at least as high); None where it never does."""
    theirs, ours = by_budget.get(reference, {}), by_budget.get(method, {})
    if not theirs or not ours:
        return None
    most = max(theirs)
    target = theirs[most]
    matched = [b for b, value in sorted(ours.items()) if value is not None and value >= target]
    return most / matched[0] if matched else None


# ---------------------------------------------------------------- 3. peers: export, run, score

def train_checkpoints(workload, params, pool_inputs: torch.Tensor, steps_wanted: list[int]) -> tuple[dict, float]:
    """Retrains θ₀ with the reference recipe (same rows, seeds and optimiser as
    `run_reference_model`) and captures the parameters after each wanted number of steps.

    The project's `StackedTrainer` computes one vmapped gradient per step on the current
    parameters; wrapping that call lets us read the parameters after s steps without
    re-implementing the optimiser. Returns ({step: state dict}, wall seconds of the run).
    """
    ref = params.reference
    rng = np.random.default_rng(ref.seed)
    rows = np.sort(rng.choice(len(pool_inputs), size=min(ref.warmup_examples, len(pool_inputs)), replace=False))
    recipe = Recipe.from_params(ref, init_seed=ref.seed, data_order_seed=ref.seed)
    began = time.perf_counter()
    trainer = StackedTrainer(workload, recipe)
    captured: dict[int, dict] = {}
    inner = trainer._stacked_grad
    calls = [0]

    def hooked(stacked, batch):
        if calls[0] in steps_wanted:  # parameters after `calls[0]` optimiser steps
            captured[calls[0]] = {n: p[0].detach().clone() for n, p in stacked.items()}
        calls[0] += 1
        return inner(stacked, batch)

    trainer._stacked_grad = hooked
    final = unstack(trainer.train(pool_inputs, [rows], [(ref.seed, 0)]), 0)
    captured[ref.steps] = {n: p.detach().clone() for n, p in final.items()}
    return {s: captured[s] for s in sorted(steps_wanted)}, time.perf_counter() - began


def export_for_peers(store: DeltaStore, workload, params, export: Path, checkpoint_counts: list[int]) -> dict:
    pool_frame, pool_inputs, task_inputs, names, task_index = stages.encoded_pool_and_tasks(store, workload)
    sketch_ids = store.read("gradient_sketches").sort("example_id")["example_id"].to_numpy()
    if not np.array_equal(pool_frame["example_id"].to_numpy(), sketch_ids):
        raise RuntimeError("pool rows and gradient_sketches rows differ: cannot align peer scores")
    total = params.reference.steps
    steps = sorted({round(total * j / k) for k in checkpoint_counts for j in range(1, k + 1)})
    checkpoints, seconds = train_checkpoints(workload, params, pool_inputs, steps)
    version, theta = stages.load_reference_model(store, workload)
    final_version = state_fingerprint(checkpoints[total])
    if final_version != version:  # fall back to the stored θ₀ so every method attributes one model
        log(f"warning: retrained θ₀ {final_version} != stored {version}; "
            "using the stored θ₀ as the last checkpoint")
        checkpoints[total] = {n: p.detach().cpu() for n, p in theta.items()}
    export.mkdir(parents=True, exist_ok=True)
    entries = []
    for step, state in checkpoints.items():
        path = f"ckpt_{step:05d}.pt"
        torch.save({n: p.cpu() for n, p in state.items()}, export / path)
        entries.append({"step": step, "path": path, "model_version": state_fingerprint(state)})
    torch.save(pool_inputs.cpu(), export / "pool.pt")
    sizes = np.bincount(task_index, minlength=len(names))
    stacked = torch.full((len(names), int(sizes.max()), task_inputs.shape[1]), PAD, dtype=task_inputs.dtype)
    mask = torch.zeros(len(names), int(sizes.max()))
    for t in range(len(names)):
        mine = task_inputs[torch.as_tensor(task_index == t)]
        stacked[t, :len(mine)] = mine.cpu()
        mask[t, :len(mine)] = 1.0
    torch.save({"inputs": stacked, "mask": mask, "per_example": task_inputs.cpu(),
                "task_index": torch.as_tensor(task_index, dtype=torch.long)}, export / "tasks.pt")
    manifest = {"repo_root": str(REPO), "workload": {"name": params.workload.name,
                                                     "params": params.workload.model_params()},
                "tasks": names, "lr": params.reference.lr, "recipe": "reference", "checkpoints": entries}
    (export / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return {"checkpoint_steps": steps, "checkpoint_training_seconds_remeasured": seconds,
            # the checkpoints come from exactly the run that made θ₀ (same recipe, rows, seeds): charge
            # the peers what the reference_model stage recorded for it, as our methods are charged,
            # so machine-load noise between two runs of one computation does not favour either side
            "checkpoint_training_seconds": float(store.read("reference_models")["seconds"][0]),
            "theta0_version": version, "retrained_theta0_version": final_version,
            "theta0_reproduced": final_version == version, "pool": len(pool_inputs), "tasks": names,
            "task_examples": int(len(task_inputs)), "parameters": int(sum(p.numel() for p in theta.values()))}


def run_peer(name: str, method: str, checkpoints: int, export: Path, out: Path, args, timeout: float) -> dict:
    grid = args.trak_regularizations if method == "dattri_trak" else [0.0]
    command = [str(args.peers_python), str(PEERS_SCRIPT), str(export), str(out), "--method", method,
               "--name", name, "--checkpoints", str(checkpoints), "--proj-dim", str(args.proj_dim),
               "--batch-size", str(args.peer_batch_size), "--regularization", *map(str, grid)]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    log(f"peer {name}: {method}, {checkpoints} checkpoint(s), timeout {timeout:.0f} s (load {load_average()})")
    began = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s (the bench's time budget)",
                "wall_seconds": time.perf_counter() - began}
    wall = time.perf_counter() - began
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        tail = (done.stderr or "").strip().splitlines()[-5:]
        return {"skipped": f"peer process exited {done.returncode} without a result: {' | '.join(tail)}"[:600],
                "wall_seconds": wall}
    result = json.loads(lines[-1])
    result["wall_seconds"] = wall
    if "skipped" in result:
        log(f"peer {name} skipped: {result['skipped']}")
    else:
        log(f"peer {name}: attribution {result['attribution_seconds']:.1f} s, process {wall:.1f} s")
    return result


class PeerScores(LinearOnScore):
    """a + b·Σ_{i∈S} score_i per task (the grad_dot form) on a peer's per-example scores."""

    method = "peer"

    def __init__(self, scores: np.ndarray, name: str, extra: dict | None = None):
        self.scores = scores  # (n_pool, T)
        self.name = name
        self.extra = extra or {}
        self.summed = None

    def score(self, data, task):
        if self.summed is None:
            self.summed = np.asarray(data.membership @ self.scores)  # (m, T)
        return self.summed[:, task]

    def config(self):
        return {"method": self.name, **self.extra}


def choose_scores(data, out: Path, result: dict, params) -> np.ndarray:
    """Returns the peer's scores; with a regularization grid, the point chosen by the project's
    LCB protocol (K-fold CV on the fit subsets only). Each point's holdout fidelity is recorded
    for the report, never used to choose."""
    grid = [g for g in result["grid"] if "scores" in g]
    if len(grid) == 1:
        return np.load(out / grid[0]["scores"])
    candidates = [PeerScores(np.load(out / g["scores"]), result["name"], {"regularization": g["regularization"]})
                  for g in grid]
    scored = choose_by_lcb(candidates, data, params.surrogate)
    for g, candidate, cv in zip(grid, candidates, scored):
        _, predicted = fit_all_tasks(PeerScores(candidate.scores, result["name"]), data, data.fit_rows)
        g.update(cv_mean=cv.cv_mean, cv_lcb=cv.cv_lcb, chosen=cv.chosen,
                 holdout_spearman_not_used_to_choose=holdout_fidelity(data, predicted)["mean_spearman"])
    chosen = next(i for i, cv in enumerate(scored) if cv.chosen)
    result["regularization"] = grid[chosen]["regularization"]
    return candidates[chosen].scores


def peer_fidelity(data, scores: np.ndarray, name: str, budgets: list[int], seed: int, draws: int) -> dict:
    began = time.perf_counter()
    surrogate = PeerScores(scores, name)
    task_params, predicted = fit_all_tasks(surrogate, data, data.fit_rows)
    fit_seconds = time.perf_counter() - began
    report = holdout_fidelity(data, predicted)
    by_budget = {}
    for budget in budgets:
        if budget < len(data.fit_rows):
            # the same draws and median as our methods' rows (fidelity_by_fit_budget)
            reports = [holdout_fidelity(restricted, fit_all_tasks(PeerScores(scores, name), restricted,
                                                                  restricted.fit_rows)[1])
                       for restricted in budget_draws(data, budget, seed, draws)]
            by_budget[budget] = draws_summary(reports)["holdout_spearman"]
    by_budget[len(data.fit_rows)] = report["mean_spearman"]
    return {"holdout_spearman": {"all": report["mean_spearman"], **report["per_sampler"]},
            "holdout_pearson": {"all": report["mean_pearson"], **report["per_sampler_pearson"]},
            "per_task_spearman": {t: v["spearman"] for t, v in report["per_task"].items()},
            "slopes": [p["slope"] for p in task_params], "fit_seconds": fit_seconds, "by_fit_subsets": by_budget}


def fit_retraining_seconds(store: DeltaStore, data) -> float:
    """Wall seconds of retraining the fit subsets (all repeats): what every method pays."""
    fit_ids = set(data.subset_ids[data.fit_rows].tolist())
    return float(store.read("subset_outcomes").filter(pl.col("subset_id").is_in(fit_ids))
                 .unique(["subset_id", "repeat"])["seconds"].sum())


def peer_plan(args) -> list[tuple[str, str, int]]:
    """(name, method, checkpoints) in run order: the cheap runs first, so a tight time budget
    drops the expensive ones."""
    runs = [(f"dattri_trak_{k}", "dattri_trak", k) for k in sorted(args.trak_checkpoints)]
    runs.insert(1, ("traker", "traker", args.traker_checkpoints))
    runs.append(("dattri_tracin", "dattri_tracin", args.tracin_checkpoints))
    return runs


def run_peers(store: DeltaStore, workload, params, data, args, deadline: float | None) -> tuple[dict, dict]:
    if not Path(args.peers_python).exists():
        reason = f"peer venv python {args.peers_python} not found (create it with bench/peers/setup.sh)"
        return {name: {"skipped": reason} for name, _, _ in peer_plan(args)}, {"skipped": reason}
    runs = peer_plan(args)
    with _work_dir(args.keep_dir and os.path.join(args.keep_dir, "peers"), "grasp-peers-") as tmp:
        export, out = Path(tmp) / "export", Path(tmp) / "scores"
        began = time.perf_counter()
        try:
            info = export_for_peers(store, workload, params, export, sorted({k for _, _, k in runs}))
        except Exception as error:  # no export, no peers: report it, keep our figures
            reason = f"export for peers failed: {type(error).__name__}: {error}"
            log(reason)
            return {name: {"skipped": reason} for name, _, _ in runs}, {"skipped": reason}
        info["export_seconds"] = time.perf_counter() - began
        log(f"exported {info['pool']} pool rows, {len(info['tasks'])} tasks, checkpoints at steps "
            f"{info['checkpoint_steps']} ({info['checkpoint_training_seconds_remeasured']:.1f} s to retrain, "
            f"{info['checkpoint_training_seconds']:.1f} s recorded for θ₀; θ₀ reproduced: "
            f"{info['theta0_reproduced']})")
        retraining = fit_retraining_seconds(store, data)
        results: dict = {}
        per_checkpoint = None  # attribution seconds per checkpoint pass, learnt from the finished runs
        for name, method, k in runs:
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None:
                passes = k * (len(args.trak_regularizations) if method == "dattri_trak" else 1)
                estimate = (per_checkpoint or 0.0) * passes
                if remaining < 20 or estimate > remaining:
                    results[name] = {"skipped": f"the bench's time budget: {max(remaining, 0):.0f} s left, "
                                                f"estimated {estimate:.0f} s for {k} checkpoint(s)",
                                     "checkpoints": k}
                    log(f"peer {name} skipped: {results[name]['skipped']}")
                    continue
            timeout = args.peer_timeout if remaining is None else min(args.peer_timeout, remaining)
            result = run_peer(name, method, k, export, out, args, timeout)
            if "skipped" not in result:
                scores = choose_scores(data, out, result, params)
                result.update(peer_fidelity(data, scores, name, list(params.surrogate.fidelity_fit_budgets),
                                            params.surrogate.seed, params.surrogate.fidelity_draws))
                per_checkpoint = max(per_checkpoint or 0.0, result["attribution_seconds"] / k / len(result["grid"]))
                result["artifact_seconds_parts"] = {
                    "checkpoint_training": info["checkpoint_training_seconds"],
                    "attribution": result["attribution_seconds"], "fit_retraining": retraining,
                    "fit": result["fit_seconds"]}
                result["artifact_seconds"] = sum(result["artifact_seconds_parts"].values())
                log(f"peer {name}: holdout ρ {result['holdout_spearman']}")
            results[name] = result
        info["fit_retraining_seconds"] = retraining
    return results, info


# ---------------------------------------------------------------- 4. targets

def targets(ours: dict, peers: dict) -> dict:
    hs, cost, ceiling = ours["holdout_spearman"], ours["artifact_seconds"], ours["noise_ceiling"]
    out: dict = {}
    g_u, d_u, c_u = hs["grasp"].get("uniform"), hs["grad_dot"].get("uniform"), ceiling.get("uniform")
    out["fixed_size_grasp_vs_grad_dot"] = {
        "target": "uniform regime: grasp >= 1.3 x grad_dot", "grasp": g_u, "grad_dot": d_u,
        "ratio": g_u / d_u if g_u is not None and d_u not in (None, 0) else None,
        "met": bool(g_u is not None and d_u is not None and g_u >= 1.3 * d_u)}
    out["fixed_size_grasp_vs_noise_ceiling"] = {
        "target": "uniform regime: grasp >= 0.85 x noise ceiling", "grasp": g_u, "noise_ceiling": c_u,
        "ratio": g_u / c_u if g_u is not None and c_u else None,
        "met": bool(g_u is not None and c_u is not None and g_u >= 0.85 * c_u) if c_u is not None else None}
    g_d = hs["grasp"].get("dirichlet")
    out["varying_grasp"] = {"target": "dirichlet regime: grasp >= 0.95", "grasp": g_d,
                            "met": bool(g_d is not None and g_d >= 0.95)}
    budgets = ours["by_fit_subsets"]
    grasp_32 = budgets.get("grasp", {}).get(32)
    dm = budgets.get("datamodel", {})
    dm_budget = 128 if 128 in dm else max((b for b in dm if b <= 128), default=None)
    dm_128 = dm.get(dm_budget) if dm_budget is not None else None
    out["grasp_32_vs_datamodel_128"] = {
        "target": "grasp at 32 fit subsets >= datamodel at 128", "grasp_at_32": grasp_32,
        "datamodel_fit_subsets": dm_budget, "datamodel": dm_128,
        "met": bool(grasp_32 is not None and dm_128 is not None and grasp_32 >= dm_128),
        **({"note": f"this run has {ours['all_fit_subsets']} fit subsets: datamodel is compared at "
                    f"{dm_budget}, not 128"} if dm_budget != 128 else {})}
    traks = {n: p for n, p in peers.items() if n.startswith("dattri_trak_") and "skipped" not in p}
    g_all = hs["grasp"].get("all")
    if traks:
        best = max(traks, key=lambda n: traks[n]["holdout_spearman"]["all"] or -1)
        peer = traks[best]
        shared = peer["artifact_seconds_parts"]["fit_retraining"]
        out["grasp_vs_dattri_trak"] = {
            "target": "grasp >= dattri TRAK's fidelity at <= 1/5 of its artifact cost (best dattri TRAK run)",
            "dattri_trak": best, "grasp": g_all, "dattri_trak_spearman": peer["holdout_spearman"]["all"],
            "grasp_artifact_seconds": cost["grasp"], "dattri_trak_artifact_seconds": peer["artifact_seconds"],
            "cost_ratio": cost["grasp"] / peer["artifact_seconds"],
            "cost_ratio_without_shared_retraining": (cost["grasp"] - shared) / (peer["artifact_seconds"] - shared),
            "fidelity_met": bool(g_all >= peer["holdout_spearman"]["all"]),
            "cost_met": bool(cost["grasp"] <= peer["artifact_seconds"] / 5),
            "cost_met_without_shared_retraining": bool(
                cost["grasp"] - shared <= (peer["artifact_seconds"] - shared) / 5),
            "per_run": {n: {"spearman": p["holdout_spearman"]["all"], "artifact_seconds": p["artifact_seconds"],
                            "fidelity_met": bool(g_all >= p["holdout_spearman"]["all"]),
                            "cost_met": bool(cost["grasp"] <= p["artifact_seconds"] / 5)}
                        for n, p in traks.items()}}
        out["grasp_vs_dattri_trak"]["met"] = (out["grasp_vs_dattri_trak"]["fidelity_met"]
                                              and out["grasp_vs_dattri_trak"]["cost_met"])
    else:
        out["grasp_vs_dattri_trak"] = {"target": "grasp >= dattri TRAK's fidelity at <= 1/5 of its artifact cost",
                                       "met": None, "note": "no dattri TRAK run finished"}
    return out


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a demo variant sized to finish within 15 minutes")
    parser.add_argument("--profile", choices=["smoke", "demo"], default="demo")
    parser.add_argument("--config", help="JSON/TOML overrides applied last")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--peers-python", default=str(PEERS_PYTHON))
    parser.add_argument("--trak-checkpoints", type=int, nargs="+")
    parser.add_argument("--tracin-checkpoints", type=int)
    parser.add_argument("--trak-regularizations", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2],
                        help="dattri TRAK's ridge λ grid (0 = dattri's default); chosen per run by CV on the "
                             "fit subsets, every grid point's attribution time is charged")
    parser.add_argument("--traker-checkpoints", type=int, default=1)
    parser.add_argument("--proj-dim", type=int, default=512, help="peers' projection dimension (dattri's default)")
    parser.add_argument("--peer-batch-size", type=int, default=256)
    parser.add_argument("--peer-timeout", type=float, default=1800.0)
    parser.add_argument("--keep-dir", help="keep the storage root, the peer export and the scores here")
    parser.add_argument("--budget-seconds", type=float,
                        help="skip peer runs that would end after this many seconds (default: 840 with --quick)")
    args = parser.parse_args()
    began = time.perf_counter()
    load_start = load_average()
    args.trak_checkpoints = args.trak_checkpoints or ([1, 5] if args.quick else [1, 5, 10])
    args.tracin_checkpoints = args.tracin_checkpoints or (5 if args.quick else 10)
    budget = args.budget_seconds if args.budget_seconds is not None else (840.0 if args.quick else None)
    deadline = None if budget is None else began + budget

    params = load_params(args.profile)
    if args.quick and args.profile == "demo":
        params = with_overrides(params, QUICK_OVERRIDES)
    if params.retrain.repeats < 2:
        params = with_overrides(params, SMOKE_REPEATS)
    if args.config:
        path = Path(args.config)
        text = path.read_text()
        import tomllib

        params = with_overrides(params, tomllib.loads(text) if path.suffix == ".toml" else json.loads(text))
    workload = params.workload.build()
    log(f"profile {args.profile}{' (quick variant)' if args.quick else ''}; torch threads "
        f"{torch.get_num_threads()}; load {load_start}")

    with _work_dir(args.keep_dir and os.path.join(args.keep_dir, "store"), "grasp-fidelity-") as root:
        store = DeltaStore(root)
        stage_seconds = run_stages(store, params, workload)
        ours = our_fidelity(store)
        log(f"ours: {json.dumps(_clean(ours['holdout_spearman']))}")
        data, _, _ = stages.load_subset_data(store)
        peers, peer_info = ({}, {"skipped": "--no-peers"}) if args.no_peers else run_peers(
            store, workload, params, data, args, deadline)
        sizes = {"pool": int(data.membership.shape[1]), "tasks": len(data.tasks),
                 "fit_subsets": int(len(data.fit_rows)), "holdout_subsets": int(len(data.holdout_rows)),
                 "subsets_by_sampler_role": {f"{s}.{r}": int(((data.samplers == s) & (data.roles == r)).sum())
                                             for s in sorted(set(data.samplers)) for r in ("fit", "holdout")},
                 "k": params.sketch.k, "retrain_steps": params.retrain.steps, "repeats": params.retrain.repeats,
                 "reference_steps": params.reference.steps}
        sketching = (float(store.read("reference_models")["seconds"].sum())
                     + float(store.read("gradient_sketches")["seconds"].sum())
                     + float(store.read("task_sketches")["seconds"].sum()))
        retraining = fit_retraining_seconds(store, data)
        our_parts = {m: {"sketching": sketching if m in ("grasp", "grad_dot", "trak") else 0.0,
                         "fit_retraining": retraining,
                         "fit": ours["artifact_seconds"][m] - retraining
                         - (sketching if m in ("grasp", "grad_dot", "trak") else 0.0)} for m in OUR_METHODS}
        repeat_reliability = {k.split(".", 1)[1]: v for k, v in noise_ceilings(
            store.read("subset_outcomes"), store.read("subset_plan")).items() if k.startswith("repeat_reliability.")}

    holdout = {m: ours["holdout_spearman"][m] for m in OUR_METHODS}
    artifact = dict(ours["artifact_seconds"])
    parts = dict(our_parts)
    for name, result in peers.items():
        if "skipped" not in result:
            holdout[name] = result["holdout_spearman"]
            artifact[name] = result["artifact_seconds"]
            parts[name] = result["artifact_seconds_parts"]
    wall = time.perf_counter() - began
    out = {
        "bench": "fidelity", "profile": args.profile, "quick": args.quick, "sizes": sizes,
        "holdout_spearman": holdout, "artifact_seconds": artifact, "noise_ceiling": ours["noise_ceiling"],
        "artifact_seconds_parts": parts,
        "repeat_reliability": repeat_reliability,
        "targets": targets(ours, peers),
        # datamodel's fit subsets at its largest budget / the fewest at which grasp matches it (issue #17)
        "ratios": {"fit_subsets_saved": fit_subsets_saved(ours["by_fit_subsets"])},
        "ours": {"holdout_pearson": ours["holdout_pearson"], "by_fit_subsets": ours["by_fit_subsets"],
                 "fidelity_report": ours["table"]},
        "skipped": {name: r["skipped"] for name, r in peers.items() if "skipped" in r},
        "peers": {"runs": peers, "export": peer_info,
                  "protocol": ("scores = pool x task attribution from each library's public API on the same "
                               "θ₀/checkpoints, pool and tasks; predicted utility a + b·Σ_{i∈S} score_i fitted "
                               "on the fit subsets only; holdout Spearman per task, mean over tasks. dattri TRAK "
                               "runs once per ridge λ of a declared grid and λ is chosen by the project's LCB "
                               "protocol on the fit subsets (holdout never used). Artifact seconds = checkpoint "
                               "training + attribution (every grid point) + fit-subset retraining + fit")},
        "stage_seconds": stage_seconds, "wall_seconds": wall,
        "load_average": {"start": load_start, "end": load_average()}, "cpu_count": os.cpu_count(),
    }
    print(json.dumps(_clean(out), indent=1))
    log(f"done in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

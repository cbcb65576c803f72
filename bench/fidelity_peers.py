"""Per-example attribution scores from peer libraries (runs inside bench/.peers-venv).

    bench/.peers-venv/bin/python bench/fidelity_peers.py EXPORT_DIR OUT_DIR --method dattri_trak --checkpoints 5

Driven by bench/fidelity.py, which exports into EXPORT_DIR (see `manifest.json` there):
the pool inputs `pool.pt` (n, L), the task inputs `tasks.pt` (per-task padded stacks with
a mask, plus the flat per-example inputs and their task index), and state dicts of the
proxy model saved along the project's reference recipe (`ckpt_{step}.pt`; the last one is
θ₀). This script imports the workload from the repository (grasp_pipeline/workload.py
needs only torch), runs ONE peer method through that library's public API, saves the
(n, T) pool × task scores as OUT_DIR/{name}.npy (OUT_DIR/{name}__reg{i}.npy per grid point)
and prints one JSON object with its wall seconds (`grid`: one entry per score file). A peer
that cannot run prints {"skipped": reason} instead (exit status 0).

Methods:
- `dattri_trak`: dattri.algorithm.trak.TRAKAttributor over K evenly spaced checkpoints
  (the last is θ₀), once per ridge λ of `--regularization` (dattri's default is 0; the
  caller chooses λ by cross-validation on the fit subsets only and charges every run).
  Model output and Q follow dattri's own nanoGPT benchmark
  (experiments/benchmark_result_nanogpt.py): f = log p − log(1 − p) with p = exp(−loss),
  Q = 1 − p. The target of task t is the mean of f over the task's examples, so the
  score equals the mean of per-test-example TRAK scores (TRAK is linear in the target
  gradient) at 1/|task| of the cost.
- `dattri_tracin`: dattri.algorithm.tracin.TracInAttributor, loss gradients (mean CE),
  weight = the recipe's learning rate at every checkpoint; target = the task's mean loss.
- `traker`: trak.TRAKer on CPU (BasicProjector, float32), a custom AbstractModelOutput
  with the same f and Q; targets are the individual task examples (TRAKer scores one
  target per row), averaged per task afterwards; λ = the first `--regularization` value
  (the bench passes 0, TRAKer's default: a cross-check of dattri's λ = 0 run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


class LossModel(nn.Module):
    """The workload's model whose forward returns per-example mean losses (B,)."""

    def __init__(self, model: nn.Module, workload):
        super().__init__()
        self.model = model
        self.workload = workload

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.workload.example_losses(self.model, x)


def log_odds(loss: torch.Tensor) -> torch.Tensor:
    """f = log p − log(1 − p) with p = exp(−loss) (the margin TRAK uses for classification)."""
    logp = -loss
    return logp - torch.log(-torch.expm1(logp))


def load_export(export: Path):
    manifest = json.loads((export / "manifest.json").read_text())
    sys.path.insert(0, manifest["repo_root"])
    from grasp_pipeline.workloads import make_workload  # noqa: E402 — repo on sys.path first

    workload = make_workload(manifest["workload"]["name"], device="cpu", **manifest["workload"]["params"])
    pool = torch.load(export / "pool.pt", weights_only=True)
    tasks = torch.load(export / "tasks.pt", weights_only=True)
    checkpoints = [{f"model.{k}": v for k, v in torch.load(export / c["path"], weights_only=True).items()}
                   for c in manifest["checkpoints"]]
    return manifest, workload, pool, tasks, checkpoints


def pick_checkpoints(checkpoints: list, steps: list[int], k: int) -> tuple[list, list[int]]:
    """Returns K evenly spaced checkpoints ending at the last (θ₀): steps round(S·j/K), j = 1..K."""
    total = steps[-1]
    wanted = [round(total * j / k) for j in range(1, k + 1)]
    missing = [w for w in wanted if w not in steps]
    if missing:
        raise ValueError(f"checkpoints at steps {missing} were not exported (have {steps})")
    return [checkpoints[steps.index(w)] for w in wanted], wanted


def run_dattri_trak(manifest, workload, pool, tasks, checkpoints, args,
                    regularization: float) -> tuple[np.ndarray, dict]:
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    model = LossModel(workload.build_model(0), workload)

    def loss_func(params, data):  # one training example (L,)
        (x,) = data
        loss = torch.func.functional_call(model, params, (x.unsqueeze(0),))[0]
        return log_odds(loss)

    def target_func(params, data):  # one task: (n_max, L) examples with a 0/1 mask
        x, mask = data
        losses = torch.func.functional_call(model, params, (x,))
        return (log_odds(losses) * mask).sum() / mask.sum()

    def correct_probability(params, data):
        (x,) = data
        loss = torch.func.functional_call(model, params, (x.unsqueeze(0),))[0]
        return torch.exp(-loss)

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=checkpoints, target_func=target_func)
    attributor = TRAKAttributor(
        task=task, correct_probability_func=correct_probability, device="cpu",
        projector_kwargs={"proj_dim": args.proj_dim, "proj_max_batch_size": 32, "proj_seed": args.seed,
                          "device": "cpu"},
        regularization=regularization)
    train = DataLoader(TensorDataset(pool), batch_size=args.batch_size, shuffle=False)
    test = DataLoader(TensorDataset(tasks["inputs"], tasks["mask"]), batch_size=len(tasks["inputs"]), shuffle=False)
    with torch.no_grad():
        attributor.cache(train)
        scores = attributor.attribute(test)  # (n_train, T)
    return scores.double().numpy(), {"api": "dattri.algorithm.trak.TRAKAttributor(cache, attribute)",
                                     "proj_dim": args.proj_dim}


def run_dattri_tracin(manifest, workload, pool, tasks, checkpoints, args,
                      regularization: float) -> tuple[np.ndarray, dict]:
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    model = LossModel(workload.build_model(0), workload)

    def loss_func(params, data):
        (x,) = data
        return torch.func.functional_call(model, params, (x.unsqueeze(0),))[0]

    def target_func(params, data):
        x, mask = data
        losses = torch.func.functional_call(model, params, (x,))
        return (losses * mask).sum() / mask.sum()

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=checkpoints, target_func=target_func)
    attributor = TracInAttributor(
        task=task, weight_list=torch.full((len(checkpoints),), float(manifest["lr"])), normalized_grad=False,
        projector_kwargs={"proj_dim": args.proj_dim, "proj_max_batch_size": 32, "proj_seed": args.seed,
                          "device": "cpu"},
        device="cpu")
    train = DataLoader(TensorDataset(pool), batch_size=args.batch_size, shuffle=False)
    test = DataLoader(TensorDataset(tasks["inputs"], tasks["mask"]), batch_size=len(tasks["inputs"]), shuffle=False)
    with torch.no_grad():
        scores = attributor.attribute(train, test)  # (n_train, T); + = lowers the task loss
    return scores.double().numpy(), {"api": "dattri.algorithm.tracin.TracInAttributor(attribute)",
                                     "proj_dim": args.proj_dim, "weight": float(manifest["lr"])}


def run_traker(manifest, workload, pool, tasks, checkpoints, args,
               regularization: float) -> tuple[np.ndarray, dict]:
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput

    class ByteLMOutput(AbstractModelOutput):
        """f = log-odds of p = exp(−mean CE) of one byte sequence; Q = 1 − p."""

        def __init__(self) -> None:
            super().__init__()

        @staticmethod
        def get_output(model, weights, buffers, x):
            loss = torch.func.functional_call(model, (weights, buffers), (x.unsqueeze(0),))[0]
            return log_odds(loss)

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            (x,) = batch  # TRAKer passes weights = buffers = None: the loaded model is current
            with torch.no_grad():
                losses = model(x)
            return (1 - torch.exp(-losses)).clone().detach().unsqueeze(-1)

    model = LossModel(workload.build_model(0), workload)
    targets = tasks["per_example"]
    with tempfile.TemporaryDirectory() as save_dir:
        # load_from_save_dir=True on a fresh, empty dir: with False, traker 0.3.2 never writes the
        # experiments.json that start_scoring_checkpoint reads
        traker = TRAKer(model=model, task=ByteLMOutput(), train_set_size=len(pool), save_dir=save_dir,
                        load_from_save_dir=True, device="cpu", proj_dim=args.proj_dim,
                        use_half_precision=False, projector_seed=args.seed, logging_level=40,
                        lambda_reg=regularization)
        for model_id, ckpt in enumerate(checkpoints):
            traker.load_checkpoint(ckpt, model_id=model_id)
            for lo in range(0, len(pool), args.batch_size):
                batch = pool[lo:lo + args.batch_size]
                traker.featurize(batch=(batch,), num_samples=len(batch))
        traker.finalize_features()
        for model_id, ckpt in enumerate(checkpoints):
            traker.start_scoring_checkpoint(exp_name="tasks", checkpoint=ckpt, model_id=model_id,
                                            num_targets=len(targets))
            for lo in range(0, len(targets), args.batch_size):
                batch = targets[lo:lo + args.batch_size]
                traker.score(batch=(batch,), num_samples=len(batch))
        per_target = np.asarray(traker.finalize_scores(exp_name="tasks"), dtype=np.float64)  # (n, m)
    index = tasks["task_index"].numpy()
    scores = np.stack([per_target[:, index == t].mean(1) for t in range(int(index.max()) + 1)], axis=1)
    return scores, {"api": "trak.TRAKer(featurize, finalize_features, score, finalize_scores)",
                    "projector": type(traker.projector).__name__, "proj_dim": args.proj_dim,
                    "half_precision": False}


METHODS = {"dattri_trak": run_dattri_trak, "dattri_tracin": run_dattri_tracin, "traker": run_traker}


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--name", help="output name (default: method)")
    parser.add_argument("--checkpoints", type=int, default=1)
    parser.add_argument("--proj-dim", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--regularization", type=float, nargs="+", default=[0.0],
                        help="TRAK's ridge λ on ΦᵀΦ; dattri_trak runs once per value (a grid), traker uses "
                             "the first, TracIn has none")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    began_all = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TQDM_DISABLE", "1")
    name = args.name or args.method
    package = "traker" if args.method == "traker" else "dattri"
    result: dict = {"name": name, "method": args.method, "package": package, "version": _version(package),
                    "torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        manifest, workload, pool, tasks, checkpoints = load_export(args.export_dir)
        chosen, steps = pick_checkpoints(checkpoints, [c["step"] for c in manifest["checkpoints"]],
                                         args.checkpoints)
        result.update(checkpoints=len(chosen), checkpoint_steps=steps, pool=len(pool),
                      tasks=len(tasks["inputs"]))
        _log(f"{name}: {len(chosen)} checkpoint(s) at steps {steps}, pool {len(pool)}, "
             f"{len(tasks['inputs'])} tasks")
        grid = args.regularization if args.method == "dattri_trak" else args.regularization[:1]
        args.out_dir.mkdir(parents=True, exist_ok=True)
        result["grid"] = []
        for i, regularization in enumerate(grid):
            entry: dict = {"regularization": regularization if args.method != "dattri_tracin" else None}
            began = time.perf_counter()
            try:
                scores, info = METHODS[args.method](manifest, workload, pool, tasks, chosen, args, regularization)
                if not np.isfinite(scores).all():
                    raise FloatingPointError(f"{int((~np.isfinite(scores)).sum())} non-finite scores")
                entry["scores"] = f"{name}.npy" if len(grid) == 1 else f"{name}__reg{i}.npy"
                np.save(args.out_dir / entry["scores"], scores)
                result.update(info)
                result["shape"] = list(scores.shape)
            except Exception as error:  # one grid point failing (e.g. a singular kernel) is recorded
                if len(grid) == 1:
                    raise
                entry["failed"] = f"{type(error).__name__}: {error}"[:300]
            entry["attribution_seconds"] = time.perf_counter() - began
            result["grid"].append(entry)
            _log(f"{name}: regularization {regularization}: {entry['attribution_seconds']:.1f} s"
                 f"{' FAILED ' + entry['failed'] if 'failed' in entry else ''}")
        if not any("scores" in g for g in result["grid"]):
            raise RuntimeError("every regularization failed: " + "; ".join(g["failed"] for g in result["grid"]))
        result["attribution_seconds"] = sum(g["attribution_seconds"] for g in result["grid"])
    except Exception as error:  # a peer that cannot run is reported, not fatal
        import traceback

        traceback.print_exc(file=sys.stderr)
        result["skipped"] = f"{type(error).__name__}: {error}"[:500]
    result["process_seconds"] = time.perf_counter() - began_all
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

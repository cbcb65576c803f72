"""Gradient-sketch engine benchmark: throughput, peak memory and sketch quality per projection.

    python bench/sketch.py [--quick] [--device cpu] [--no-peers]

Prints one JSON object on stdout (progress goes to stderr). Everything runs side by side in
one run, on the default workload (byte_mlp) and the ~0.9M-parameter byte transformer, each
at a reference model θ₀ warmed up for a few Adam steps on the embedded corpus:

- `gradients`: per-example gradient throughput of the vmapped path (`torch.func.vmap(grad)`
  over chunks) against a Python loop of one `autograd.grad` per example; FLOPs per example
  counted with `torch.utils.flop_counter` and the achieved FLOP rate as a fraction of a
  plain `torch.matmul` rate measured in the same run.
- `projections`: examples/s and peak memory (peak RSS above the level before the cell,
  sampled every 2 ms) of the full sketching path for gaussian, rademacher, sjlt and
  kronecker at k ∈ {64, 256, 1024}; the cost of building a cached projection once is
  reported apart (`setup_seconds`), not in the rate.
- `quality`: relative error of ⟨z_i, z_j⟩ and ⟨q_t, z_i⟩ against the exact gradient inner
  products on a sample (errors scaled by ‖g_i‖‖g_j‖, mean over pairs and seeds), plus the
  Spearman ρ between sketched and exact task scores.
- `peers`: TRAK's CPU BasicProjector (`traker`) and dattri's `random_project` at the same k
  on the same saved gradients, run in bench/.peers-venv (created by bench/peers/setup.sh
  on first use); their end-to-end rate is our vmapped gradient time plus their projection
  time. A peer that cannot be installed or imported is skipped with a note.
- `memory_growth`: peak memory of the default projection as the pool grows 10×.
"""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grasp_pipeline.config import RetrainParams  # noqa: E402
from grasp_pipeline.corpus import cut_examples, load_documents  # noqa: E402
from grasp_pipeline.sketching import DenseProjector, GradientSketcher  # noqa: E402
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, unstack  # noqa: E402
from grasp_pipeline.workloads import make_workload  # noqa: E402

KINDS = ("gaussian", "rademacher", "sjlt", "kronecker")
DEFAULT_KIND = "sjlt"
PEER_VENV = ROOT / "bench" / ".peers-venv"

# per workload: warm-up steps, examples per throughput cell, loop examples, quality sample,
# examples per task (4 tasks), memory-growth base pool and its chunk size; (quick, full)
SIZES = {
    "default": dict(name="byte_mlp", warmup=(60, 150), n=(256, 2048), loop=(32, 256), sample=(96, 192),
                    task=(32, 64), memory=(256, 512), memory_chunk=(64, 64)),
    "transformer": dict(name="byte_transformer", warmup=(8, 40), n=(64, 256), loop=(8, 32), sample=(48, 96),
                        task=(8, 32), memory=(32, 128), memory_chunk=(16, 64)),
}


def log(message: str) -> None:
    print(f"[bench/sketch {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled on a thread every 2 ms."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.delta_mib = (self.peak - self.base) / 2 ** 20
        self.base_mib = self.base / 2 ** 20


def trim_heap() -> None:
    """Returns freed heap memory to the OS so the next cell's RSS rise is its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident (VmRSS) or peak resident (VmHWM) memory; VmHWM starts afresh
    at exec (getrusage's ru_maxrss can carry the parent's peak into a child)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def interleaved_best(fns: list, rounds: int) -> list[float]:
    """Best wall time of each function over `rounds` rounds that run them in turn."""
    best = [math.inf] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            began = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - began)
    return best


def best_time(fn, reps: int, min_seconds: float = 0.0) -> float:
    """Best wall time of `fn` over `reps` runs (stops early once one run took min_seconds)."""
    best = math.inf
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
        if best >= min_seconds > 0:
            break
    return best


def matmul_gflops(device: str, size: int = 2048, reps: int = 5) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()

    def run():
        a @ b
        sync()

    return 2 * size ** 3 / best_time(run, reps) / 1e9


def pool_inputs(workload, n: int, seed: int = 0) -> torch.Tensor:
    documents, _ = load_documents(None)
    examples = cut_examples(documents, 128)
    examples = examples.sample(n=min(n, examples.height), seed=seed, shuffle=True)
    return workload.encode(examples["text"].to_list())


def loop_flat_grads(workload, params, inputs: torch.Tensor) -> torch.Tensor:
    """Per-example flat gradients with one autograd.grad call per example (the baseline)."""
    model = workload.build_model(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    flats = []
    for i in range(inputs.shape[0]):
        loss = workload.example_losses(model, inputs[i:i + 1])[0]
        grads = torch.autograd.grad(loss, list(model.parameters()))
        flats.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(flats)


def errors(z: np.ndarray, q: np.ndarray, exact: dict) -> dict:
    """Relative errors of sketched inner products against exact gradient inner products."""
    z, q = z.astype(np.float64), q.astype(np.float64)
    norms, task_norms = exact["norms"], exact["task_norms"]
    scale = norms[:, None] * norms[None, :]
    upper = np.triu_indices(len(norms), 1)
    pair = ((z @ z.T - exact["gram"]) / scale)[upper]
    norm = (z ** 2).sum(1) / norms ** 2 - 1
    task = (q @ z.T - exact["task_dots"]) / (task_norms[:, None] * norms[None, :])
    rho = [_spearman(q[t] @ z.T, exact["task_dots"][t]) for t in range(q.shape[0])]
    return {"pair_error": float(np.abs(pair).mean()), "norm_error": float(np.abs(norm).mean()),
            "task_error": float(np.abs(task).mean()), "task_spearman": float(np.mean(rho))}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def mean_errors(items: list[dict]) -> dict:
    return {key: float(np.mean([e[key] for e in items])) for key in items[0]}


def ensure_peers() -> tuple[Path | None, str | None]:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        log("creating the peer venv (bench/peers/setup.sh) ...")
        done = subprocess.run(["bash", str(ROOT / "bench" / "peers" / "setup.sh")], capture_output=True, text=True)
        if not python.exists():
            return None, f"bench/peers/setup.sh failed: {(done.stderr or done.stdout).strip()[-300:]}"
    return python, None


def run_peers(python: Path, grads: np.ndarray, ks: list[int], chunk: int, workdir: Path) -> dict:
    path = workdir / "grads.npy"
    np.save(path, grads)
    done = subprocess.run([str(python), str(ROOT / "bench" / "peers" / "project.py"), str(path), str(workdir),
                           "--ks", *map(str, ks), "--chunk", str(chunk)], capture_output=True, text=True)
    path.unlink()
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(done.stdout)
    for peer, entry in result["peers"].items():
        for cell in entry.get("cells", []):
            cell["sketch"] = np.load(workdir / f"{peer}_k{cell['k']}.npy")
    return result


def bench_workload(key: str, quick: bool, device: str, ks: list[int], peers_python, peers_note,
                   seeds: int, chunk: int, workdir: Path) -> dict:
    size = {name: value[0 if quick else 1] if isinstance(value, tuple) else value
            for name, value in SIZES[key].items()}
    workload = make_workload(size["name"], device=device)
    n, n_sample, n_task = size["n"], size["sample"], size["task"]
    tasks = 4
    inputs = pool_inputs(workload, n + n_sample + tasks * n_task + 400)
    warm_rows = np.arange(inputs.shape[0] - 400, inputs.shape[0])
    log(f"{key}: warming θ₀ up ({size['warmup']} Adam steps)")
    trainer = StackedTrainer(workload, Recipe.from_params(RetrainParams(), steps=size["warmup"], batch_size=32))
    theta = unstack(trainer.train(inputs, [warm_rows], [(0, 0)]), 0)
    p = sum(t.numel() for t in theta.values())
    pool = inputs[:n]
    sample = inputs[:n_sample] if n_sample <= n else inputs[n:n + n_sample]
    task_inputs = inputs[n + n_sample:n + n_sample + tasks * n_task]
    out: dict = {"workload": size["name"], "parameters": p, "examples_per_cell": n, "chunk_size": chunk,
                 "warmup_steps": size["warmup"]}

    # ---- exact gradients on the quality sample and the task sets ----------------------------
    reference = GradientSketcher(workload, theta, "sjlt", 64, 0, chunk)
    flat = torch.cat([reference.per_example.flat(sample[lo:lo + chunk])[1].cpu() for lo in range(0, n_sample, chunk)])
    task_grads = torch.stack([
        torch.cat([reference.per_example.flat(task_inputs[t * n_task:(t + 1) * n_task][lo:lo + chunk])[1].cpu()
                   for lo in range(0, n_task, chunk)]).mean(0) for t in range(tasks)])
    g64, q64 = flat.double(), task_grads.double()
    exact = {"gram": (g64 @ g64.T).numpy(), "norms": g64.norm(dim=1).numpy(),
             "task_dots": (q64 @ g64.T).numpy(), "task_norms": q64.norm(dim=1).numpy()}
    del g64

    # ---- gradients: vmap vs loop, FLOPs ------------------------------------------------------
    log(f"{key}: gradients (vmap vs loop)")
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        reference.per_example.flat(pool[:8])
    flops_per_example = counter.get_total_flops() / 8

    def vmap_all():
        for lo in range(0, n, chunk):
            reference.per_example.flat(pool[lo:lo + chunk])

    reference.per_example.flat(pool[:chunk])  # warm-up (first-call overheads are not throughput)
    # interleaved rounds, best of each: load from other jobs hits both sides alike
    vmap_seconds, loop_seconds = interleaved_best(
        [vmap_all, lambda: loop_flat_grads(workload, theta, pool[:size["loop"]])], 2 if quick else 3)
    vmap_rate, loop_rate = n / vmap_seconds, size["loop"] / loop_seconds
    out["gradients"] = {"vmap_examples_per_second": vmap_rate, "loop_examples_per_second": loop_rate,
                        "vmap_over_loop": vmap_rate / loop_rate, "loop_examples": size["loop"],
                        "flops_per_example": flops_per_example, "achieved_gflops": flops_per_example * vmap_rate / 1e9}

    # ---- projections (per k, the four kinds in interleaved rounds; best round each) -------------
    cells = []
    for k in ks:
        log(f"{key}: projections at k={k} ({', '.join(KINDS)}, interleaved)")
        sketchers, setups, results, peaks = {}, {}, {}, {}
        for kind in KINDS:
            sketchers[kind] = GradientSketcher(workload, theta, kind, k, 0, chunk)
            began = time.perf_counter()
            if getattr(sketchers[kind].projector, "fully_cached", True):
                # builds a cached matrix / the CSR bags once (an uncached dense matrix is
                # regenerated per buffer, which the timed runs include)
                sketchers[kind].sketch_examples(pool[:min(chunk, 8)])
            setups[kind] = time.perf_counter() - began
            peaks[kind] = 0.0

        def runner(kind):
            def run():
                trim_heap()
                with PeakRSS() as memory:
                    results[kind] = sketchers[kind].sketch_examples(pool)
                peaks[kind] = max(peaks[kind], memory.delta_mib)
            return run

        seconds = interleaved_best([runner(kind) for kind in KINDS], 2)
        for kind, kind_seconds in zip(KINDS, seconds):
            sketcher = sketchers[kind]
            cell = {"kind": kind, "k": k, "examples_per_second": n / kind_seconds, "seconds": kind_seconds,
                    "setup_seconds": setups[kind], "peak_rss_delta_mib": peaks[kind]}
            if kind == "kronecker":
                cell["factor_dim"] = sketcher.projector.factor_dim
                cell["stage1_width"] = sketcher.projector.width
            if isinstance(sketcher.projector, DenseProjector) and not sketcher.projector.fully_cached:
                cell["examples_per_generated_matrix"] = min(n, sketcher.gradients.rows)
            # quality: seed 0 through the production path, more seeds through project(flat)
            z = results[kind].sketch[:n_sample] if n_sample <= n else sketcher.sketch_examples(sample).sketch
            q = sketcher.projector.project(task_grads.to(device)).cpu().numpy()
            per_seed = [errors(z, q, exact)]
            for seed in range(1, seeds):
                other = GradientSketcher(workload, theta, kind, k, seed, chunk).projector
                both = other.project(torch.cat([flat, task_grads]).to(device)).cpu().numpy()
                per_seed.append(errors(both[:n_sample], both[n_sample:], exact))
            cell.update(mean_errors(per_seed))
            cells.append(cell)
    out["projections"] = cells

    # ---- peers --------------------------------------------------------------------------------
    if peers_python is None:
        out["peers"] = {"skipped": peers_note}
    else:
        log(f"{key}: peers (traker, dattri) on {n_sample} saved gradients")
        rows = torch.cat([flat, task_grads]).numpy()  # the peer projects sample and task gradients together
        ours = {}
        for k in ks:  # our SJLT on the same rows, chunk by chunk, timed just before the peers
            projector = GradientSketcher(workload, theta, "sjlt", k, 0, chunk).projector
            projector.project(flat[:chunk].to(device))
            tensor = torch.from_numpy(rows).to(device)
            ours[k] = best_time(lambda: [projector.project(tensor[lo:lo + chunk]) for lo in range(0, len(rows),
                                                                                                  chunk)], 2)
        peer_result = run_peers(peers_python, rows, ks, chunk, workdir)
        peer_result["ours_sjlt_projection_examples_per_second"] = {str(k): len(rows) / s for k, s in ours.items()}
        if "error" not in peer_result:
            for entry in peer_result["peers"].values():
                for cell in entry.get("cells", []):
                    sketch = cell.pop("sketch")
                    cell.update(errors(sketch[:n_sample], sketch[n_sample:], exact))
                    cell["projection_examples_per_second"] = cell.pop("examples_per_second")
                    # their pipeline = our vmapped per-example gradients + their projector
                    cell["end_to_end_examples_per_second"] = 1 / (1 / vmap_rate + 1 /
                    cell["projection_examples_per_second"])
        out["peers"] = peer_result

    # ---- memory as the pool grows 10× (each pool size in a fresh process) ----------------------
    base = size["memory"]
    memory_chunk = size["memory_chunk"]
    log(f"{key}: memory growth ({DEFAULT_KIND}, k=256, {base} vs {10 * base} examples in chunks of {memory_chunk}, "
        "one process each)")
    theta_path = workdir / f"theta-{key}.pt"
    torch.save(theta, theta_path)
    peaks = {str(m): memory_cell_process(key, size["name"], theta_path, m, memory_chunk, device)
             for m in (base, 10 * base)}
    small, large = peaks[str(base)], peaks[str(10 * base)]
    out["memory_growth"] = {"kind": DEFAULT_KIND, "k": 256, "chunk_size": memory_chunk, "pools": peaks,
                            "growth_10x_pool": large["peak_rss_mib"] / small["peak_rss_mib"],
                            "delta_growth_10x_pool": large["peak_rss_delta_mib"] / max(small["peak_rss_delta_mib"],
                                                                                       1.0)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cells (finishes within 10 minutes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-peers", action="store_true", help="skip traker and dattri")
    parser.add_argument("--ks", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--workloads", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--chunk-size", type=int, default=64)
    args = parser.parse_args()
    began = time.perf_counter()
    torch.manual_seed(0)
    peers_python, peers_note = (None, "--no-peers") if args.no_peers else ensure_peers()
    if args.device != "cpu" and peers_python is not None:
        peers_note = "peers run their CPU projectors; compared on CPU only"
    matmul = matmul_gflops(args.device)
    log(f"matmul: {matmul:.1f} GFLOP/s")
    report: dict = {"bench": "sketch", "quick": args.quick, "device": args.device, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "ks": args.ks, "matmul_gflops": matmul, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="bench-sketch-") as tmp:
        for key in args.workloads:
            report["workloads"][key] = bench_workload(key, args.quick, args.device, args.ks, peers_python, peers_note,
                                                      seeds=2, chunk=args.chunk_size, workdir=Path(tmp))
    for entry in report["workloads"].values():
        entry["gradients"]["fraction_of_matmul"] = entry["gradients"]["achieved_gflops"] / matmul
    report["ratios"], report["ratio_notes"] = ratios(report)
    report["table"] = table(report)
    report["seconds"] = time.perf_counter() - began
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


def memory_cell_process(key: str, name: str, theta_path: Path, m: int, chunk: int, device: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--memory-cell", json.dumps([name, str(theta_path), m, chunk,
                                                                                  device])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"memory cell {key} m={m} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def memory_cell(name: str, theta_path: str, m: int, chunk: int, device: str) -> dict:
    """Sketches m pool examples with the default projection; peak RSS of this process."""
    workload = make_workload(name, device=device)
    theta = torch.load(theta_path)
    inputs = pool_inputs(workload, m, seed=1)
    sketcher = GradientSketcher(workload, theta, DEFAULT_KIND, 256, 0, chunk)
    sketcher.sketch_examples(inputs[:chunk])  # warm-up: CSR matrix, first-call allocations
    trim_heap()
    before = rss_mib()
    began = time.perf_counter()
    sketches = sketcher.sketch_examples(inputs)
    peak = rss_mib("VmHWM")
    return {"examples": m, "seconds": time.perf_counter() - began, "rss_before_mib": before, "peak_rss_mib": peak,
            "peak_rss_delta_mib": peak - before, "sketch_mib": sketches.sketch.nbytes / 2 ** 20}


def _cell(entry: dict, kind: str, k: int) -> dict:
    return next(c for c in entry["projections"] if c["kind"] == kind and c["k"] == k)


def ratios(report: dict) -> tuple[dict, dict]:
    """The headline ratios (exact keys) and how each was computed."""
    workloads = report["workloads"]
    big = workloads.get("transformer") or next(iter(workloads.values()))
    default = workloads.get("default") or big
    k = max(report["ks"])
    sjlt, dense = _cell(big, "sjlt", k), _cell(big, "gaussian", k)
    best_over_traker, best_note = None, "traker unavailable"
    peers = big.get("peers", {})
    trak = peers.get("peers", {}).get("traker", {})
    trak_cell = next((c for c in trak.get("cells", []) if c["k"] == k), None)
    ours_projection = peers.get("ours_sjlt_projection_examples_per_second", {}).get(str(k))
    sjlt_fair = trak_cell is not None and sjlt["pair_error"] <= 1.1 * trak_cell["pair_error"]
    if trak_cell is not None and ours_projection and sjlt_fair:
        # same per-example gradients (our vmap rate) for both; projections timed side by side
        # on the same saved gradients
        vmap_rate = big["gradients"]["vmap_examples_per_second"]
        ours_e2e = 1 / (1 / vmap_rate + 1 / ours_projection)
        best_over_traker = ours_e2e / trak_cell["end_to_end_examples_per_second"]
        best_note = (f"sjlt {ours_e2e:.2f} ex/s (pair error {sjlt['pair_error']:.4f}) over TRAK BasicProjector "
                     f"{trak_cell['end_to_end_examples_per_second']:.2f} ex/s "
                     f"(pair error {trak_cell['pair_error']:.4f}),"
                     f" k={k}, {big['workload']}: both = our vmapped gradients + the projection timed on the same "
                     f"saved gradients; measured in-pipeline sjlt: {sjlt['examples_per_second']:.2f} ex/s")
    elif trak_cell is not None:
        best_note = "our sjlt did not reach TRAK's error at this k" if not sjlt_fair else "no projection timing"
    values = {
        "vmap_over_loop": default["gradients"]["vmap_over_loop"],
        "sjlt_over_dense_k1024": sjlt["examples_per_second"] / dense["examples_per_second"],
        "best_over_traker": best_over_traker,
        "sjlt_error_over_dense_error": sjlt["pair_error"] / dense["pair_error"],
        "peak_memory_growth_10x_pool": max(w["memory_growth"]["growth_10x_pool"] for w in workloads.values()),
        "flops_fraction_of_matmul": big["gradients"]["fraction_of_matmul"],
    }
    notes = {
        "vmap_over_loop": f"{default['workload']} gradients; per workload: "
                          + ", ".join(f"{w['workload']} {w['gradients']['vmap_over_loop']:.1f}x"
                                      for w in workloads.values()),
        "sjlt_over_dense_k1024": f"end-to-end sketching examples/s on {big['workload']} at k={k} (gradients included)",
        "best_over_traker": best_note,
        "sjlt_error_over_dense_error": f"mean |pair error| on {big['workload']} at k={k}",
        "peak_memory_growth_10x_pool": ("max over workloads of the process peak RSS sketching a 10x pool / a 1x "
                                        "pool (fresh process each)"),
        "flops_fraction_of_matmul": f"vmapped per-example gradients on {big['workload']}",
    }
    return values, notes


def table(report: dict) -> list[str]:
    rows = ["workload | kind | k | ex/s | peak MiB | pair err | task err | task rho"]
    for entry in report["workloads"].values():
        g = entry["gradients"]
        rows.append(f"{entry['workload']} | vmap grads | - | {g['vmap_examples_per_second']:.1f} | - | - | - | -")
        rows.append(f"{entry['workload']} | loop grads | - | {g['loop_examples_per_second']:.1f} | - | - | - | -")
        for c in entry["projections"]:
            rows.append(f"{entry['workload']} | {c['kind']} | {c['k']} | {c['examples_per_second']:.1f} | "
                        f"{c['peak_rss_delta_mib']:.0f} | {c['pair_error']:.4f} | {c['task_error']:.4f} | "
                        f"{c['task_spearman']:.3f}")
        for peer, p in entry.get("peers", {}).get("peers", {}).items():
            for c in p.get("cells", []):
                rows.append(f"{entry['workload']} | {peer} (vmap + their projector) | {c['k']} | "
                            f"{c['end_to_end_examples_per_second']:.1f} | - | {c['pair_error']:.4f} | - | -")
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-cell":
        json.dump(memory_cell(*json.loads(sys.argv[2])), sys.stdout)
        raise SystemExit(0)
    raise SystemExit(main())

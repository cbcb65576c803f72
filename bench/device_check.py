"""The torch engines on an accelerator: same results as on CPU, and their throughput there.

    python bench/device_check.py [--device cuda] [--quick] [--small]

Needs only torch and numpy (no polars, Delta, MLflow or Dagster), so it runs on a bare GPU
image; the `gpt2_proxy` workload also needs `transformers` (without it that entry says why
it was skipped). For each workload it checks that sketches (every projection) and batched
retraining give the CPU's results on the device within float tolerance, and measures
sketching examples/s and retraining subsets/s (batched vs one at a time) there.
`gpt2_proxy` is a GPT-2-style hf_causal_lm past 15M parameters (`GPT2_SIZES`); `--small`
runs the same code path on a 2-layer toy (what the CPU test exercises). One JSON object on
stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from grasp_pipeline.config import RetrainParams
from grasp_pipeline.sketching import GradientSketcher  # noqa: E402
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, task_losses, unstack  # noqa: E402
from grasp_pipeline.workloads import make_workload  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "grasp_pipeline" / "data" / "default_corpus.jsonl.gz"
WORKLOADS = {"byte_mlp": {}, "byte_transformer": {}, "gpt2_proxy": {}}


def corpus_texts(n: int, length: int = 128) -> list[str]:
    """n fixed-length chunks of the embedded corpus, round-robin over documents (no polars)."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as handle:
        documents = [json.loads(line)["text"] for line in handle]
    chunks = [[doc[i:i + length] for i in range(0, len(doc) - length, length)] for doc in documents]
    out, i = [], 0
    while len(out) < n:
        for doc in chunks:
            if i < len(doc):
                out.append(doc[i])
        i += 1
    return out[:n]


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn):
    synchronise(device)
    began = time.perf_counter()
    value = fn()
    synchronise(device)
    return value, time.perf_counter() - began


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def check_workload(name: str, device: str, quick: bool, texts: list[str], parts: set[str], steps: int = 0) -> dict:
    cpu_workload, dev_workload = make_workload(name, "cpu"), make_workload(name, device)
    cpu_inputs = cpu_workload.encode(texts)
    dev_inputs = cpu_inputs.to(device)
    recipe = Recipe.from_params(RetrainParams(), steps=steps or (20 if quick else 40), batch_size=16)
    # θ₀: a short warm-up on CPU, then the same parameters on both devices
    theta_cpu = unstack(StackedTrainer(cpu_workload, recipe).train(cpu_inputs, [np.arange(512)], [(0, 0)]), 0)
    theta_dev = {k: v.to(device) for k, v in theta_cpu.items()}
    out: dict = {"workload": name, "parameters": int(sum(t.numel() for t in theta_cpu.values()))}

    if "sketch" in parts:
        out.update(check_sketches(cpu_workload, dev_workload, theta_cpu, theta_dev, cpu_inputs, dev_inputs,
                                  device, quick))
    if "retrain" in parts:
        out.update(check_retraining(cpu_workload, dev_workload, recipe, cpu_inputs, dev_inputs, device, len(texts)))
    return out


def check_sketches(cpu_workload, dev_workload, theta_cpu, theta_dev, cpu_inputs, dev_inputs, device: str,
                   quick: bool) -> dict:
    """Sketches on CPU vs device (every projection), and device throughput at k = 1024."""
    out = {}
    sample = slice(0, 64)
    for kind, k in [("sjlt", 256), ("gaussian", 256), ("kronecker", 256)]:
        cpu = GradientSketcher(cpu_workload, theta_cpu, kind, k, 0, 64).sketch_examples(cpu_inputs[sample]).sketch
        dev = GradientSketcher(dev_workload, theta_dev, kind, k, 0, 64).sketch_examples(dev_inputs[sample]).sketch
        out[f"sketch_{kind}_k{k}_cpu_vs_device_rel_error"] = relative_error(cpu, dev)
    n = 1024 if quick else 4096
    for kind in ("sjlt", "gaussian"):
        for chunk in (64, 256):
            sketcher = GradientSketcher(dev_workload, theta_dev, kind, 1024, 0, chunk)
            sketcher.sketch_examples(dev_inputs[:chunk])  # warm-up (projection generation, kernels)
            _, seconds = timed(device, lambda: sketcher.sketch_examples(dev_inputs[:n]))
            out[f"sketch_{kind}_k1024_chunk{chunk}_examples_per_second"] = n / seconds
    if device.startswith("cuda"):
        out["sketch_peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def check_retraining(cpu_workload, dev_workload, recipe: Recipe, cpu_inputs, dev_inputs, device: str,
                     n_texts: int, m: int = 64, size: int = 200, n_tasks: int = 256) -> dict:
    """Batched (M = m) vs one-at-a-time retraining on the device, and device vs CPU losses."""
    rng = np.random.default_rng(0)
    subsets = [np.sort(rng.choice(np.arange(n_tasks, n_texts), size=size, replace=False)) for _ in range(m)]
    seeds = [(0, i) for i in range(m)]
    tasks, task_index, names = dev_inputs[:n_tasks], np.arange(n_tasks) % 4, ["a", "b", "c", "d"]
    trainer = StackedTrainer(dev_workload, recipe)
    trainer.train(dev_inputs, subsets[:1], seeds[:1])  # warm-up
    stacked, batched_seconds = timed(device, lambda: trainer.train(dev_inputs, subsets, seeds))
    batched_losses = task_losses(trainer.example_losses(stacked, tasks), task_index, names)
    rerun = trainer.train(dev_inputs, subsets[:8], seeds[:8])  # same subsets and seeds, a smaller stack
    rerun_same_stack = trainer.train(dev_inputs, subsets, seeds)
    rerun_losses = task_losses(trainer.example_losses(rerun, tasks), task_index, names)
    rerun_same_losses = task_losses(trainer.example_losses(rerun_same_stack, tasks), task_index, names)
    sequential = min(m, 8)
    singles, sequential_seconds = timed(device, lambda: [trainer.train(dev_inputs, [subsets[i]], [seeds[i]])
                                                         for i in range(sequential)])
    sequential_losses = np.concatenate([task_losses(trainer.example_losses(s, tasks), task_index, names)
                                        for s in singles])
    cpu_trainer = StackedTrainer(cpu_workload, recipe)
    cpu_stacked = cpu_trainer.train(cpu_inputs, subsets[:4], seeds[:4])
    cpu_losses = task_losses(cpu_trainer.example_losses(cpu_stacked, cpu_inputs[:n_tasks]), task_index, names)
    return {
        "retrain_steps": recipe.steps, "dtype": str(torch.get_default_dtype()),
        f"retrain_batched_m{m}_subsets_per_second": m / batched_seconds,
        "retrain_sequential_subsets_per_second": sequential / sequential_seconds,
        "retrain_batched_over_sequential": (m / batched_seconds) / (sequential / sequential_seconds),
        "retrain_max_abs_loss_diff_batched_vs_sequential": float(np.abs(batched_losses[:sequential]
                                                                        - sequential_losses).max()),
        "retrain_max_abs_loss_diff_device_vs_cpu": float(np.abs(batched_losses[:4] - cpu_losses).max()),
        "retrain_max_abs_loss_diff_rerun_same_stack": float(np.abs(batched_losses - rerun_same_losses).max()),
        f"retrain_max_abs_loss_diff_m{m}_vs_m8": float(np.abs(batched_losses[:8] - rerun_losses).max()),
        "retrain_abs_loss_diff_per_subset_batched_vs_sequential": np.abs(
            batched_losses[:sequential] - sequential_losses).max(axis=1).tolist(),
        "retrain_mean_final_loss": float(batched_losses.mean()),
    }


# the proxy of `--make-tiny --proxy` (≈ 23M parameters) and its test-size toy: the same code path
GPT2_SIZES = {"full": {"vocab_size": 8192, "n_layer": 6, "n_embd": 512, "n_head": 8, "n_positions": 64},
              "small": {"vocab_size": 300, "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 16}}


def check_gpt2_proxy(device: str, small: bool, parts: set[str], steps: int = 0) -> dict:
    """The GPT-2-style proxy: sketch (kronecker over every parameter; sjlt over the last two
    blocks) and retraining throughput on `device`, and their CPU-vs-device differences."""
    try:
        from grasp_pipeline.workloads.hf_causal_lm import make_tiny
    except ImportError as error:  # pragma: no cover - the bench image may lack it
        return {"workload": "gpt2_proxy", "skipped": f"transformers is not installed ({error})"}
    import tempfile

    sizes = GPT2_SIZES["small" if small else "full"]
    texts = corpus_texts(64 if small else 2048, length=4 * sizes["n_positions"])
    with tempfile.TemporaryDirectory() as directory:
        make_tiny(directory, **sizes, training_texts=texts)
        settings = {"hf_model_path": directory, "max_tokens": sizes["n_positions"]}
        cpu_workload = make_workload("hf_causal_lm", "cpu", **settings)
        dev_workload = make_workload("hf_causal_lm", device, **settings)
        subset = {kind: make_workload("hf_causal_lm", kind, **settings, hf_sketch_last_blocks=2)
                  for kind in {"cpu", device}}
        cpu_inputs = cpu_workload.encode(texts)
        theta = {n: p.detach() for n, p in cpu_workload.build_model(0).named_parameters()}
        out: dict = {"workload": "gpt2_proxy", "config": sizes,
                     "parameters": int(sum(t.numel() for t in theta.values()))}
        recipe = Recipe.from_params(RetrainParams(), steps=steps or (2 if small else 10),
                                    batch_size=4 if small else 8, lr=1e-3)
        if "sketch" in parts:
            for kind, cpu_w, dev_w in (("kronecker", cpu_workload, dev_workload), ("sjlt", subset["cpu"],
                                                                                  subset[device])):
                out.update(_gpt2_sketches(kind, cpu_w, dev_w, theta, cpu_inputs, device, small))
        if "retrain" in parts:
            m = 4 if small else (16 if device.startswith("cuda") else 4)
            out.update(check_retraining(cpu_workload, dev_workload, recipe, cpu_inputs, cpu_inputs.to(device),
                                        device, len(texts), m=m, size=8 if small else 64, n_tasks=16))
    return out


def _gpt2_sketches(kind: str, cpu_workload, dev_workload, theta: dict, cpu_inputs, device: str, small: bool) -> dict:
    """CPU-vs-device relative error and device examples/s of one projection of the proxy."""
    label = f"sketch_{kind}{'_last2blocks' if kind == 'sjlt' else ''}_k1024"
    chunk = 8 if small or not device.startswith("cuda") else 64
    theta_dev = {k: v.to(device) for k, v in theta.items()}
    sample = cpu_inputs[:8]
    cpu = GradientSketcher(cpu_workload, theta, kind, 1024, 0, chunk).sketch_examples(sample).sketch
    sketcher = GradientSketcher(dev_workload, theta_dev, kind, 1024, 0, chunk)
    dev = sketcher.sketch_examples(sample.to(device)).sketch
    n = min(cpu_inputs.shape[0], 8 if small else (512 if device.startswith("cuda") else 64))
    inputs = cpu_inputs[:n].to(device)
    _, seconds = timed(device, lambda: sketcher.sketch_examples(inputs))
    return {f"{label}_sketched_parameters": int(sketcher.projector.p),
            f"{label}_cpu_vs_device_rel_error": relative_error(cpu, dev),
            f"{label}_chunk{chunk}_examples_per_second": n / seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--small", action="store_true", help="gpt2_proxy: a 2-layer toy of the same code path")
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--parts", nargs="*", default=["sketch", "retrain"], choices=["sketch", "retrain"])
    parser.add_argument("--steps", type=int, default=0, help="retraining steps (default 40, --quick 20)")
    parser.add_argument("--float64", action="store_true",
                        help="build models in float64: separates rounding amplification from real differences")
    parser.add_argument("--deterministic", action="store_true",
                        help="torch.use_deterministic_algorithms(True) (CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8)")
    args = parser.parse_args()
    if args.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if args.float64:
        torch.set_default_dtype(torch.float64)
    texts = corpus_texts(2048)
    report = {"device": args.device, "deterministic": args.deterministic, "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "workloads": []}
    for name in args.workloads:
        began = time.perf_counter()
        if name == "gpt2_proxy":
            result = check_gpt2_proxy(args.device, args.small, set(args.parts), args.steps)
        else:
            result = check_workload(name, args.device, args.quick, texts, set(args.parts), args.steps)
        result["seconds"] = time.perf_counter() - began
        report["workloads"].append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

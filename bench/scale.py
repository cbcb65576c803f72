"""The pipeline's cost as the pool grows: seconds and peak memory per stage, growth per 10×.

    python bench/scale.py [--quick]

Prints one JSON object on stdout (progress on stderr). The pipeline's stages (corpus_shards
through mixture_weights; the closed loop, validation and the tests after it retrain at fixed
counts like subset_outcomes and are left out) run at pool sizes 10⁴ and 10⁵, and sketching and
selection alone at 10⁶ (hours on 2 cores: sketching costs ~7 ms of CPU per example and
checkpoint). `--quick` runs the pipeline at 10³ and 10⁴, no sketch-only size, with fewer fixed
subsets, steps, candidates and checkpoints (QUICK_FIXED). Settings: the `smoke` profile with the
demo's k = 256, one process per stage (workers = 1), shards of 4,096, and fixed subset counts
*and sizes*: the plan's fractions shrink as the pool grows, so retraining and the surrogate fit
see the same subsets' worth of work at every size.

The corpus: a seeded transform of the embedded one (grasp_pipeline/data/default_corpus.jsonl.gz),
copied as often as the largest domain share needs; copy 0 is the original, copy j ≥ 1 shuffles
each document's lines and rotates its text by a seeded offset, so its 128-byte examples are new
byte strings (content dedup does not collapse them) in the same domains.

Each stage runs in its own subprocess against one storage root. Its seconds are wall-clock;
its memory is the peak resident set (VmHWM, reset after the imports) minus the resident set
before the stage ran, so the interpreter, torch and polars (~0.3–0.5 GB, the same at every
size) are not counted; the absolute peak (the child's ru_maxrss) is reported beside it.

`ratios` (growth per 10× of the pool, from the two largest sizes each stage ran at):
- sketch_growth_10x: gradient_sketches seconds;
- other_stages_growth_10x: subset_plan + subset_outcomes + surrogates + mixture_weights seconds;
- selection_growth_10x: curated_selection seconds;
- peak_memory_over_sketch_and_model: the largest stage memory at the largest size over the
  bytes of the float32 sketch matrix (n × k × checkpoints) plus the float32 model.
At small pools fixed buffers (vmap chunks, polars and torch pools) dominate that last ratio, so
`marginal_memory_over_sketch` adds each stage's memory growth between the two largest sizes over
the sketch matrix's growth: what the ratio tends to as the pool grows.
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parents[1]
SIZES, SKETCH_ONLY_SIZES = (10_000, 100_000), (1_000_000,)
QUICK_SIZES, QUICK_SKETCH_ONLY_SIZES = (1_000, 10_000), ()
# --quick: fewer (fixed) subsets, steps, candidates and checkpoints, so it ends in minutes on 2 cores
QUICK_FIXED = {
    "reference": {"sketch_steps": [15, 30]},
    "plan": {"uniform_fit": 10, "uniform_holdout": 4, "dirichlet_fit": 10, "dirichlet_holdout": 4,
             "stratified_fit": 4, "stratified_holdout": 4},
    "retrain": {"steps": 15},
    "surrogate": {"cv_folds": 3, "grasp_size_terms": ["log"], "grasp_normalisations": ["none", "mean"],
                  "grasp_ridges": [0.1], "datamodel_ridges": [1.0, 10.0], "fidelity_fit_budgets": [8, 16]},
}
PIPELINE = ("corpus_shards", "reference_model", "gradient_sketches", "task_sketches", "subset_plan",
            "subset_outcomes", "surrogates", "curated_selection", "mixture_weights")
# at a sketch-only size the reference model and the surrogate come from the largest pipeline root
SKETCH_ONLY = ("corpus_shards", "gradient_sketches", "task_sketches", "curated_selection")
COPIED = ("reference_models", "surrogates", "surrogate_candidates", "surrogate_predictions", "fidelity_report")
OTHER_STAGES = ("subset_plan", "subset_outcomes", "surrogates", "mixture_weights")
PLAN_FRACTIONS = {"uniform_fraction": 0.1, "dirichlet_min_fraction": 0.02, "dirichlet_max_fraction": 0.3}
SHARD_SIZE = 4096
TASK_EXAMPLES = 32  # per domain (the smoke profile's)
STAGE_TIMEOUT_S = 3600


def overrides_for(n: int, smallest: int, domains: int, corpus_path: str, quick: bool) -> dict:
    """The settings of one pool size over the smoke profile (plan fractions scaled so subset sizes stay fixed)."""
    fixed = QUICK_FIXED if quick else {}
    return {"corpus": {"corpus_path": corpus_path, "pool_examples_per_domain": math.ceil(n / domains),
                       "task_examples_per_domain": TASK_EXAMPLES, "shard_size": SHARD_SIZE},
            "sketch": {"k": 256}, "reference": fixed.get("reference", {}),
            "plan": {**fixed.get("plan", {}), **{k: v * smallest / n for k, v in PLAN_FRACTIONS.items()}},
            "retrain": {**fixed.get("retrain", {}), "workers": 1},
            "surrogate": {**fixed.get("surrogate", {}), "workers": 1}}


def _transformed(text: str, rng: np.random.Generator) -> str:
    """A document's lines in a seeded order, rotated by a seeded offset of up to 127 characters."""
    lines = text.split("\n")
    shuffled = "\n".join(lines[i] for i in rng.permutation(len(lines)))
    offset = int(rng.integers(1, 128)) % max(len(shuffled), 1)
    return shuffled[offset:] + "\n" + shuffled[:offset]


def synthesise_corpus(path: Path, n: int, seed: int = 0) -> dict:
    """Writes a parquet corpus with enough 128-byte examples per domain for a pool of n; returns facts."""
    with gzip.open(REPO / "grasp_pipeline" / "data" / "default_corpus.jsonl.gz", "rt") as f:
        docs = [json.loads(line) for line in f]
    by_domain: dict[str, list[dict]] = {}
    for doc in docs:
        by_domain.setdefault(doc["domain"], []).append(doc)
    per_domain = math.ceil(n / len(by_domain)) + TASK_EXAMPLES
    rows = {"id": [], "domain": [], "source": [], "text": []}
    copies = {}
    for d, (domain, group) in enumerate(sorted(by_domain.items())):
        pieces = sum(len(doc["text"].encode()) for doc in group) / 128
        copies[domain] = max(1, math.ceil(1.25 * per_domain / pieces))
        for j in range(copies[domain]):
            for i, doc in enumerate(group):
                rng = np.random.default_rng([seed, d, i, j])
                rows["id"].append(f"{doc['id']}~{j}")
                rows["domain"].append(domain)
                rows["source"].append(doc.get("source") or "embedded")
                rows["text"].append(doc["text"] if j == 0 else _transformed(doc["text"], rng))
    pl.DataFrame(rows).write_parquet(path)
    return {"documents": len(rows["id"]), "copies_per_domain": copies, "bytes": path.stat().st_size}


def _memory(field: str) -> int:
    """This process's VmRSS or VmHWM (peak resident set since the last reset), in bytes."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status[field].split()[0]) * 1024


def run_stage_here(name: str, root: str, overrides: dict) -> dict:
    """Runs one stage in this process; returns its seconds and memory (bytes)."""
    from grasp_pipeline import stages
    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.infra.storage import DeltaStore

    params = with_overrides(load_params("smoke"), overrides)
    workload = params.workload.build()
    run = dict(stages.stage_plan(DeltaStore(root), params, workload))[name]
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: the peak from here on is the stage's
        f.write("5")
    before = _memory("VmRSS")
    began, cpu_began = time.perf_counter(), time.process_time()
    run()
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "cpu_seconds": cpu_seconds + children.ru_utime + children.ru_stime,
            "rss_before_bytes": before, "stage_memory_bytes": _memory("VmHWM") - before,
            "worker_peak_rss_bytes": children.ru_maxrss * 1024}


def run_stage(name: str, root: str, overrides: dict, log: Path) -> dict:
    """Runs one stage in a subprocess; returns its measurements (or an `error`)."""
    command = [sys.executable, __file__, "--stage", json.dumps([name, root, overrides])]
    with open(log, "a") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        began = time.monotonic()
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [f"exit {process.returncode}"]
        return {"error": tail[0], "wall_seconds": time.monotonic() - began}
    return {**json.loads(out), "peak_rss_bytes": usage.ru_maxrss * 1024}


def copy_tables(source: str, target: str, tables: tuple[str, ...]) -> None:
    from grasp_pipeline.infra.storage import DeltaStore

    src, dst = DeltaStore(source), DeltaStore(target)
    for table in tables:
        dst.write(table, src.read(table))


def sketch_and_model_bytes(root: str, n: int) -> dict:
    """Bytes of the float32 sketch matrix (from the task sketches' width) and of the float32 model."""
    from grasp_pipeline.infra.storage import DeltaStore

    store = DeltaStore(root)
    width = int(store.read("task_sketches", columns=["sketch"])["sketch"].list.len()[0])
    parameters = int(store.read("reference_models", columns=["parameters"])["parameters"][0])
    return {"pool": n, "sketch_width": width, "sketch_bytes": n * width * 4, "model_bytes": parameters * 4}


def measure_size(n: int, names: tuple[str, ...], overrides: dict, root: str, log: Path) -> dict:
    """Runs `names` at pool size n in `root`; returns per-stage measurements and the denominators."""
    from grasp_pipeline.infra.storage import DeltaStore

    cells = {}
    for name in names:
        cell = run_stage(name, root, overrides, log)
        cells[name] = cell
        print(json.dumps({"n": n, "stage": name, **cell}), file=sys.stderr, flush=True)
        if "error" in cell:
            break
    pool = DeltaStore(root).read("corpus_shards", columns=["example_id"]).height if "error" not in cells.get(
        "corpus_shards", {"error": 1}) else n
    return {"n": pool, "requested_n": n, "stages": cells,
            **(sketch_and_model_bytes(root, pool) if all("error" not in c for c in cells.values()) else {})}


def growth_per_10x(small: dict, big: dict, names: tuple[str, ...], key: str = "seconds") -> float | None:
    """(x_big / x_small)^(1 / log10(n_big / n_small)) of the summed `key` (seconds) of stages `names`."""
    try:
        x_small = sum(small["stages"][s][key] for s in names)
        x_big = sum(big["stages"][s][key] for s in names)
    except KeyError:
        return None
    return (x_big / x_small) ** (1 / math.log10(big["n"] / small["n"])) if x_small > 0 else None


def last_pair(sizes: list[dict], name: str) -> tuple[dict, dict] | None:
    """The two largest sizes at which stage `name` ran."""
    ran = [s for s in sizes if "seconds" in s["stages"].get(name, {})]
    return (ran[-2], ran[-1]) if len(ran) >= 2 else None


def memory_ratio(size: dict) -> dict:
    """Each stage's memory over the sketch matrix plus the model, at one size."""
    denominator = size.get("sketch_bytes", 0) + size.get("model_bytes", 0)
    if not denominator:
        return {}
    return {name: c["stage_memory_bytes"] / denominator for name, c in size["stages"].items()
            if "stage_memory_bytes" in c}


def growth_ratios(pipeline: list[dict], everything: list[dict], key: str) -> dict:
    """The three growth ratios of the summed `key` (seconds or cpu_seconds)."""
    sketch_pair, selection_pair = last_pair(everything, "gradient_sketches"), last_pair(everything,
                                                                                         "curated_selection")
    other_pair = (pipeline[-2], pipeline[-1]) if len(pipeline) >= 2 else None
    return {"sketch_growth_10x": growth_per_10x(*sketch_pair, ("gradient_sketches",), key) if sketch_pair else None,
            "other_stages_growth_10x": growth_per_10x(*other_pair, OTHER_STAGES, key) if other_pair else None,
            "selection_growth_10x": (growth_per_10x(*selection_pair, ("curated_selection",), key)
                                     if selection_pair else None)}


def summarise(pipeline: list[dict], sketch_only: list[dict]) -> dict:
    """The headline ratios, the per-stage growth and the memory ratios."""
    everything = pipeline + sketch_only
    sketch_pair, selection_pair = last_pair(everything, "gradient_sketches"), last_pair(everything,
                                                                                         "curated_selection")
    other_pair = (pipeline[-2], pipeline[-1]) if len(pipeline) >= 2 else None
    largest = max((s for s in everything if "sketch_bytes" in s), key=lambda s: s["n"], default=None)
    memory = memory_ratio(largest) if largest else {}
    ratios = {**growth_ratios(pipeline, everything, "seconds"),
              "peak_memory_over_sketch_and_model": max(memory.values()) if memory else None}
    targets = {"sketch_growth_10x": 12, "other_stages_growth_10x": 2, "selection_growth_10x": 12,
               "peak_memory_over_sketch_and_model": 2}
    pairs = {name: pair for name in PIPELINE if (pair := last_pair(everything, name))}
    marginal = {name: (big["stages"][name]["stage_memory_bytes"] - small["stages"][name]["stage_memory_bytes"])
                / (big["sketch_bytes"] - small["sketch_bytes"]) for name, (small, big) in pairs.items()
                if "sketch_bytes" in small and "sketch_bytes" in big}
    return {"ratios": ratios, "targets": {k: f"<= {v}" for k, v in targets.items()},
            "ratios_cpu_seconds": growth_ratios(pipeline, everything, "cpu_seconds"),
            "misses": sorted(k for k, v in ratios.items() if v is None or v > targets[k]),
            "ratio_pairs": {"sketch": [p["n"] for p in sketch_pair or []],
                            "selection": [p["n"] for p in selection_pair or []],
                            "other_stages": [p["n"] for p in other_pair or []],
                            "memory_at": largest["n"] if largest else None},
            "stage_growth_10x": {name: growth_per_10x(*pair, (name,)) for name, pair in pairs.items()},
            "stage_cpu_growth_10x": {name: growth_per_10x(*pair, (name,), "cpu_seconds") for name,
                                     pair in pairs.items()},
            "stage_memory_growth_10x": {name: growth_per_10x(*pair, (name,), "stage_memory_bytes")
                                        for name, pair in pairs.items()},
            "stage_memory_over_sketch_and_model": memory, "marginal_memory_over_sketch": marginal,
            "memory_stage": max(memory, key=memory.get) if memory else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="pipeline at 10³ and 10⁴ with fewer fixed subsets, "
                        "steps and checkpoints; no sketch-only size")
    parser.add_argument("--sizes", help="comma-separated pipeline pool sizes (overrides the defaults)")
    parser.add_argument("--sketch-only-sizes", help="comma-separated sketch-and-selection-only pool sizes")
    parser.add_argument("--summarise", metavar="JSON", help="recompute the summary of a saved run's output")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage_here(*json.loads(args.stage))))
        return 0
    if args.summarise:
        saved = json.loads(Path(args.summarise).read_text())
        print(json.dumps({**saved, **summarise(saved["pipeline"], saved["sketch_only"])}, indent=1, default=float))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(QUICK_SIZES if args.quick else SIZES)
    extra = ([int(s) for s in args.sketch_only_sizes.split(",") if s] if args.sketch_only_sizes is not None
             else list(QUICK_SKETCH_ONLY_SIZES if args.quick else SKETCH_ONLY_SIZES))
    started, load_start = time.time(), os.getloadavg()
    pipeline, sketch_only, corpora = [], [], {}
    with tempfile.TemporaryDirectory(prefix="grasp-scale-") as tmp:
        log = Path(tmp) / "stages.log"
        for n in sizes + extra:
            path = Path(tmp) / f"corpus-{n}.parquet"
            corpora[n] = synthesise_corpus(path, n)
            domains = len(corpora[n]["copies_per_domain"])
            overrides = overrides_for(n, min(sizes), domains, str(path), args.quick)
            root = str(Path(tmp) / f"root-{n}")
            if n in extra:
                copy_tables(str(Path(tmp) / f"root-{max(sizes)}"), root, COPIED)
                sketch_only.append(measure_size(n, SKETCH_ONLY, overrides, root, log))
            else:
                pipeline.append(measure_size(n, PIPELINE, overrides, root, log))
    print(json.dumps({
        "bench": "scale", "quick": args.quick, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": sizes, "sketch_only_sizes": extra,
        "size_note": ("quick: pipeline at 10³ and 10⁴ examples instead of 10⁴ and 10⁵, no 10⁶ sketch-only size, "
                      "and the quick fixed counts; ratios are growth per 10× either way") if args.quick else "",
        "settings": {"profile": "smoke", "k": 256, "shard_size": SHARD_SIZE, "workers": 1,
                     "quick_fixed_counts": QUICK_FIXED if args.quick else None,
                     "plan_fractions_at_smallest_size": PLAN_FRACTIONS, "budget_fraction": 0.1,
                     "memory": "VmHWM minus VmRSS before the stage (imports excluded)"},
        **summarise(pipeline, sketch_only),
        "cpu_count": os.cpu_count(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "wall_seconds": time.time() - started, "corpora": corpora,
        "pipeline": pipeline, "sketch_only": sketch_only}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

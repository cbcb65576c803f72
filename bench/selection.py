"""Residual-greedy selection at scale: exact vs lazy vs batched, seconds, peak memory, objective.

    python bench/selection.py [--quick] [--pairs P] [--methods exact,lazy,batched]

Prints one JSON object on stdout (progress on stderr). Synthetic float32 sketches, k = 128,
budget B = n/10, normalisation N = 1/B. Each (regime, n, method) cell runs in its own
subprocess so that its peak memory is its own: the peak resident set (VmHWM, reset after the
sketch is built) minus the process's size before the sketch existed, so it counts the
sketch itself plus everything the selection adds; the target is ≤ 2× the sketch. Seconds
are wall-clock; cpu_seconds (one thread) tell how much of that was waiting for a loaded CPU.

The pool: 64 Gaussian cluster centres, each row a centre plus unit Gaussian noise (redundancy
is real: rows of a cluster are near-duplicates in the directions that matter). v averages 4
centres plus noise. The penalty D = λ·c·I, where c puts the unconstrained optimum's alignment
⟨v, m*⟩ at half that of the additive top-B mean. Two regimes:
- "moderate" (λ = 0.3): the greedy beats additive top-k by a few percent, ~80% overlap;
- "strong" (λ = 1): additive top-k scores below random; every pick moves the others' gains
  by more than the gaps between them, which is the worst case for lazy's bounds.
The headline `ratios` use the moderate regime; `ratios_strong` repeats them for the other.

Side by side. Timings on a shared machine drift with its load, so the headline growth is
not read off one 10⁵ and one 10⁶ run minutes apart: after the grid, the headline method
runs P more times at 10⁵ and at 10⁶, alternately (`side_by_side`), and `ratios` holds the
medians over those pairs (the grid's own cells are pair 0): `time_growth_1e5_to_1e6` (wall),
`cpu_time_growth_1e5_to_1e6` (CPU seconds of the one thread), `seconds_1e6` and
`cpu_seconds_1e6`.

A method is skipped at a size where its predicted CPU time exceeds ~60 s (exact: quadratic in
n at B = n/10, ×2 for leaving the cache — measured 61 CPU-s at 10⁵; lazy: from its own smaller
run, quadratic when it fell back to exact steps); the cell then says so with its prediction.
CPU seconds, not wall: on a loaded machine wall time runs several times the CPU time, and a
wall-clock guard would skip the cells the ratios need.
"""

from __future__ import annotations

import argparse  # noqa: E402
import ctypes  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os
import subprocess  # noqa: E402
import sys
import time  # noqa: E402

import numpy as np

K = 128
REGIMES = {"moderate": 0.3, "strong": 1.0}
SIZES = (10_000, 100_000, 1_000_000)
METHODS = ("exact", "lazy", "batched")
SKIP_ABOVE_S = 60.0


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def synthetic(n: int, seed: int = 0, clusters: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Returns (z float32 n×K, v float64 K); built in blocks so no n×K temporary exists."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, K)).astype(np.float32)
    z = np.empty((n, K), np.float32)
    for a in range(0, n, 8192):  # small blocks: their temporaries must not linger in the heap
        b = min(n, a + 8192)
        z[a:b] = centres[rng.integers(clusters, size=b - a)]
        z[a:b] += rng.standard_normal((b - a, K), dtype=np.float32)
    v = centres[:4].astype(float).mean(0) + 0.3 * rng.normal(size=K)
    return z, v


def penalty(z: np.ndarray, v: np.ndarray, budget: int, strength: float) -> np.ndarray:
    """Returns D (diagonal) = strength·c with c = ‖v‖²/⟨v, mean of the additive top-B⟩."""
    scores = z @ v.astype(np.float32)
    top = np.zeros(len(z), bool)
    top[np.argpartition(-scores, budget - 1)[:budget]] = True
    total = np.zeros(K)
    for a in range(0, len(z), 8192):  # blockwise: no B×K gather
        total += z[a:a + 8192][top[a:a + 8192]].sum(0, dtype=np.float64)
    return np.full(K, strength * float(v @ v) / float(v @ (total / budget)))


def objective(z: np.ndarray, rows: np.ndarray, v: np.ndarray, d: np.ndarray, scale: float) -> float:
    """f(S) = N⟨v, s⟩ − N²‖s‖²_D computed from scratch in float64, blockwise."""
    s = np.zeros(K)
    for a in range(0, len(rows), 65536):
        s += z[np.sort(rows[a:a + 65536])].sum(0, dtype=np.float64)
    return float(scale * v @ s - scale ** 2 * (s * s) @ d)


def cell(regime: str, n: int, method: str) -> dict:
    """Runs one selection in this process; returns seconds, memory, objective and stats."""
    from grasp_pipeline.selection import residual_greedy

    before_sketch = _status_bytes("VmRSS")
    z, v = synthetic(n)
    budget = n // 10
    d = penalty(z, v, budget, REGIMES[regime])
    scale = 1.0 / budget
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so the baseline is the live data
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM: the peak from here on is the selection's
        f.write("5")
    before_selection = _status_bytes("VmRSS")
    began, cpu_began = time.perf_counter(), time.process_time()
    selection = residual_greedy(z, v, d, scale, budget, method=method)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    peak = _status_bytes("VmHWM")
    rows = selection.rows
    return {"regime": regime, "n": n, "method": method, "budget": budget, "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "sketch_bytes": int(z.nbytes), "peak_memory_bytes": peak - before_sketch,
            "peak_memory_over_sketch": (peak - before_sketch) / z.nbytes,
            "extra_memory_over_sketch": (peak - before_selection) / z.nbytes,
            "objective": objective(z, rows, v, d, scale), "rows_selected": int(len(rows)),
            "rows_sha1": hashlib.sha1(rows.astype(np.int64).tobytes()).hexdigest(),
            "stats": {k: v for k, v in selection.stats.items() if k != "method"}}


def run_cell(regime: str, n: int, method: str, timeout: float) -> dict:
    command = [sys.executable, __file__, "--cell", json.dumps([regime, n, method])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    except subprocess.TimeoutExpired:
        return {"regime": regime, "n": n, "method": method, "skipped": f"ran past the {timeout:.0f} s guard"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        return {"regime": regime, "n": n, "method": method, "error": tail}
    return json.loads(done.stdout)


def predicted_seconds(method: str, n: int, done: dict) -> float | None:
    """Predicts a cell's CPU seconds from the same method's previous size; None if nothing to go on."""
    smaller = [c for (m, size), c in done.items() if m == method and size < n and "cpu_seconds" in c]
    if not smaller:
        return None
    prev = max(smaller, key=lambda c: c["n"])
    growth = n / prev["n"]
    if method == "exact":  # B·n·k with B = n/10; ×2 as the 10⁴ pool fits in cache and larger ones do not
        return 2 * prev["cpu_seconds"] * growth ** 2
    if method == "lazy":
        exact_share = prev["stats"].get("exact_steps", 0) / max(prev["rows_selected"], 1)
        return prev["cpu_seconds"] * growth * (1 + exact_share * (growth - 1))
    return prev["cpu_seconds"] * growth


def ratios_for(cells: list[dict], regime: str) -> dict:
    """Returns the three headline ratios for a regime, plus which variant they describe."""
    at = {(c["method"], c["n"]): c for c in cells if c["regime"] == regime and "seconds" in c}
    exact_ref = at.get(("exact", 10_000))
    near_exact = []
    for method in METHODS:  # exact-or-near-exact: objective within 0.1% of exact's at n = 10⁴
        small = at.get((method, 10_000))
        if small and exact_ref and small["objective"] >= exact_ref["objective"] - 1e-3 * abs(exact_ref["objective"]):
            near_exact.append(method)
    candidates = [at[(m, 1_000_000)] for m in near_exact if (m, 1_000_000) in at]
    if not candidates:
        return {"seconds_1e6": None, "peak_memory_over_sketch_bytes_1e6": None, "time_growth_1e5_to_1e6": None}, None
    best = min(candidates, key=lambda c: c["seconds"])
    mid = at.get((best["method"], 100_000))
    return {"seconds_1e6": best["seconds"], "peak_memory_over_sketch_bytes_1e6": best["peak_memory_over_sketch"],
            "time_growth_1e5_to_1e6": best["seconds"] / mid["seconds"] if mid else None,
            "cpu_seconds_1e6": best["cpu_seconds"],
            "cpu_time_growth_1e5_to_1e6": best["cpu_seconds"] / mid["cpu_seconds"] if mid else None}, best["method"]


def side_by_side(cells: list[dict], regime: str, method: str, pairs: int) -> tuple[list[dict], dict]:
    """Runs `method` at 10⁵ and 10⁶ alternately `pairs` times; returns the pairs and their median ratios.

    The grid's own 10⁵ and 10⁶ cells count as the first pair. Medians, because one pair
    that met a burst of load elsewhere on the machine should not set the headline.
    """
    at = {(c["method"], c["n"]): c for c in cells if c["regime"] == regime and "seconds" in c}
    rounds = [(at.get((method, 100_000), {}), at.get((method, 1_000_000), {}))]
    for _ in range(pairs):
        rounds.append(tuple(run_cell(regime, n, method, timeout=300) for n in (100_000, 1_000_000)))
        print(json.dumps({"pair": len(rounds) - 1, "seconds": [c.get("seconds") for c in rounds[-1]]}),
              file=sys.stderr, flush=True)
    rounds = [(a, b) for a, b in rounds if "seconds" in a and "seconds" in b]
    summary = [{"seconds_1e5": a["seconds"], "seconds_1e6": b["seconds"], "cpu_seconds_1e5": a["cpu_seconds"],
                "cpu_seconds_1e6": b["cpu_seconds"], "peak_memory_over_sketch_1e6": b["peak_memory_over_sketch"]}
               for a, b in rounds]
    median = {key: float(np.median([r[key] for r in summary])) for key in summary[0]}
    ratios = {"seconds_1e6": median["seconds_1e6"],
              "peak_memory_over_sketch_bytes_1e6": max(r["peak_memory_over_sketch_1e6"] for r in summary),
              "time_growth_1e5_to_1e6": float(np.median([r["seconds_1e6"] / r["seconds_1e5"] for r in summary])),
              "cpu_seconds_1e6": median["cpu_seconds_1e6"],
              "cpu_time_growth_1e5_to_1e6": float(np.median([r["cpu_seconds_1e6"] / r["cpu_seconds_1e5"]
                                                             for r in summary]))}
    return summary, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10⁴ and 10⁵ only")
    parser.add_argument("--pairs", type=int, default=2, help="extra alternating 10⁵/10⁶ runs of the headline method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(cell(*json.loads(args.cell))))
        return 0
    started, load_start = time.time(), os.getloadavg()
    sizes = SIZES[:2] if args.quick else SIZES
    methods = [m for m in METHODS if m in args.methods.split(",")]
    cells = []
    for regime in REGIMES:
        done: dict = {}
        for n in sizes:
            for method in methods:
                guess = predicted_seconds(method, n, done)
                if guess is not None and guess > SKIP_ABOVE_S:
                    result = {"regime": regime, "n": n, "method": method,
                              "skipped": f"predicted {guess:.0f} CPU-s > {SKIP_ABOVE_S:.0f} s"}
                else:
                    result = run_cell(regime, n, method, timeout=300)
                done[(method, n)] = result
                cells.append(result)
                print(json.dumps({k: v for k, v in result.items() if k not in ("stats", "rows_sha1")}),
                      file=sys.stderr, flush=True)
        # against exact where it ran, else against lazy (the same selection) where that ran
        for n in sizes:
            ref = done.get(("exact", n)) if "seconds" in done.get(("exact", n), {}) else done.get(("lazy", n))
            if not ref or "seconds" not in ref:
                continue
            for method in methods:
                c = done.get((method, n), {})
                if "objective" in c:
                    c["objective_over_" + ref["method"]] = c["objective"] / ref["objective"]
                    c["same_rows_as_" + ref["method"]] = c["rows_sha1"] == ref["rows_sha1"]
    ratios, which = ratios_for(cells, "moderate")
    ratios_strong, which_strong = ratios_for(cells, "strong")
    pairs = []
    if which and not args.quick:
        pairs, ratios = side_by_side(cells, "moderate", which, args.pairs)
    for c in cells:
        c.pop("rows_sha1", None)
    print(json.dumps({
        "k": K, "budget_fraction": 0.1, "normalisation": "1/B", "sizes": list(sizes),
        "cpu_count": os.cpu_count(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "wall_seconds": time.time() - started,
        "ratios": ratios,
        "ratios_variant": {"regime": "moderate", "method": which,
                           "near_exact": "objective within 0.1% of exact's at n = 10⁴"},
        "ratios_strong": {**ratios_strong, "method": which_strong},
        "side_by_side": pairs, "cells": cells}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

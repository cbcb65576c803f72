"""bench/device_check.py's GPT-2-style proxy, run at test size on CPU (the code path a GPU run takes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "device_check.py"


def test_the_gpt2_proxy_check_reports_throughput_and_cpu_equal_results_at_test_size():
    completed = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--workloads", "gpt2_proxy", "--small"],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (result,) = json.loads(completed.stdout)["workloads"]
    assert result["workload"] == "gpt2_proxy" and "skipped" not in result
    config = result["config"]
    assert result["parameters"] > config["vocab_size"] * config["n_embd"]  # embedding plus blocks
    for kind in ("kronecker", "sjlt_last2blocks"):
        assert result[f"sketch_{kind}_k1024_cpu_vs_device_rel_error"] < 1e-5
        assert result[f"sketch_{kind}_k1024_chunk8_examples_per_second"] > 0
    assert result["sketch_sjlt_last2blocks_k1024_sketched_parameters"] < result["parameters"]
    assert result["retrain_batched_m4_subsets_per_second"] > 0
    assert result["retrain_max_abs_loss_diff_device_vs_cpu"] < 1e-5

"""Wall seconds per stage and the resulting fidelity/selection figures, as one JSON object.

    python bench/pipeline.py [--profile smoke|demo] [--config FILE] [--device cpu]

Runs the library stages directly (no Dagster, no MLflow) in a temporary storage root, so the
numbers are the stages' own cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

from grasp_pipeline import stages
from grasp_pipeline.config import load_params, with_overrides
from grasp_pipeline.evaluation.summary import fidelity_table, selection_table
from grasp_pipeline.infra.storage import DeltaStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--config")
    parser.add_argument("--device")
    args = parser.parse_args()
    params = load_params(args.profile, args.config)
    if args.device:
        params = with_overrides(params, {"workload": {"device": args.device}})
    workload = params.workload.build()
    seconds = {}
    with tempfile.TemporaryDirectory() as root:
        store = DeltaStore(root)
        plan = stages.stage_plan(store, params, workload)
        for name, run in plan:
            began = time.perf_counter()
            run()
            seconds[name] = round(time.perf_counter() - began, 2)
            print(f"{name}: {seconds[name]} s", file=sys.stderr, flush=True)
        fidelity = fidelity_table(store).to_dicts()
        selection = selection_table(store).to_dicts()
    print(json.dumps({"profile": args.profile, "device": params.workload.device, "stage_seconds": seconds,
                      "total_seconds": round(sum(seconds.values()), 2),
                      "holdout_spearman": {row["method"]: row for row in fidelity},
                      "selection_mean_utility": {row["method"]: row["mean_utility"] for row in selection}},
                     indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

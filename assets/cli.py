"""`grasp` console script: materialise the whole graph through Dagster, then summarise.

Runs land in a persistent Dagster instance (DAGSTER_HOME, default `.grasp/dagster_home`
under the working folder), so `dagster dev -w workspace.yaml` started from the same folder
shows them with their metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path


def _ensure_dagster_home() -> str:
    home = os.environ.setdefault("DAGSTER_HOME", str(Path(".grasp/dagster_home").resolve()))
    Path(home).mkdir(parents=True, exist_ok=True)
    (Path(home) / "dagster.yaml").touch()  # an empty file = default local storage, no warning
    return home


def _listify(values: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def error_chain(error) -> str:
    """Returns the messages of a Dagster SerializableErrorInfo and its causes, outermost first."""
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    return "\n  caused by: ".join(messages)


def run_config_for(params, root: str, tracking_uri: str = "") -> dict:
    """Returns the Dagster run config that materialises the graph with `params`."""
    section = lambda p: {"config": _listify(dataclasses.asdict(p))}  # noqa: E731
    return {
        "ops": {
            "corpus_shards": section(params.corpus),
            "reference_model": section(params.reference),
            "gradient_sketches": section(params.sketch),
            "subset_plan": section(params.plan),
            "subset_outcomes": section(params.retrain),
            "grasp_surrogate": section(params.surrogate),
            "curated_selection": section(params.selection),
            "mixture_weights": section(params.mixture),
            "selection_validation": {"config": {"models_per_batch": params.retrain.models_per_batch}},
        },
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        "resources": {
            "storage": {"config": {"root": root, "tracking_uri": tracking_uri}},
            "workload": {"config": _listify(dataclasses.asdict(params.workload))},
        },
    }


def command_run(args) -> int:
    _ensure_dagster_home()
    from dagster import DagsterInstance

    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.storage import DeltaStore
    from grasp_pipeline.summary import format_summary

    from .definitions import defs
    from .jobs import materialize_everything

    params = load_params(args.profile, args.config)
    overrides = {}
    if args.corpus:
        overrides["corpus"] = {"corpus_path": str(Path(args.corpus).resolve()) if "*" not in args.corpus
                               else args.corpus}
    if args.device:
        overrides["workload"] = {"device": args.device}
    params = with_overrides(params, overrides)
    root = args.root or os.environ.get("GRASP_ROOT", ".grasp/storage")
    root = root if "://" in root else str(Path(root).resolve())
    run_config = run_config_for(params, root, args.tracking_uri or "")
    instance = DagsterInstance.get()
    began = time.perf_counter()
    print(f"grasp run: profile={args.profile} root={root} DAGSTER_HOME={os.environ['DAGSTER_HOME']}", flush=True)
    results = materialize_everything(defs, instance, run_config, tags={"grasp/profile": args.profile})
    stage_seconds = {}
    for result in results:
        for stat in instance.get_run_step_stats(result.run_id):
            if stat.end_time and stat.start_time:
                stage_seconds[stat.step_key] = round(stat.end_time - stat.start_time, 1)
    run_ids = ", ".join(r.run_id for r in results)
    failed = [r for r in results if not r.success]
    if failed:
        for event in failed[0].all_events:
            if event.is_failure and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    print(f"step {event.step_key} failed: {error_chain(error)}", file=sys.stderr)
        print(f"grasp run FAILED (Dagster runs {run_ids}); earlier table versions are intact.", file=sys.stderr)
        return 1
    print(format_summary(DeltaStore(root), stage_seconds))
    print(f"total wall seconds: {time.perf_counter() - began:.1f}; Dagster runs {run_ids}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grasp", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="materialise the whole asset graph and print a summary")
    run.add_argument("--corpus", help="Parquet/JSONL file, directory or glob (default: embedded corpus)")
    run.add_argument("--root", help="storage root for Delta tables and MLflow (default: .grasp/storage)")
    run.add_argument("--profile", default="demo", choices=["smoke", "demo"])
    run.add_argument("--config", help="JSON or TOML file of {section: {field: value}} overrides")
    run.add_argument("--device", help="torch device (cpu, cuda, …); overrides the config")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under the root)")
    run.set_defaults(handler=command_run)
    args = parser.parse_args(argv)
    from grasp_pipeline.corpus import CorpusError

    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError, CorpusError) as error:  # bad flags or config: no traceback
        print(f"grasp: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

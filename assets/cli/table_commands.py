"""`grasp export`, `grasp maintain` and `grasp mixture-update`: work on the tables without a Dagster run.

Each takes its section of a `--config` file (`[export]`, `[maintenance]`, `[mixture_update]`
with the run's `[corpus]` and `[mixture]`), flags override it, progress goes to stderr, and
what they did is reported to the Dagster instance (assets/cli/instance.py), so the UI's catalog
shows the export, each table's maintenance and the update. `grasp maintain` and `grasp
mixture-update` commit to the tables, so they hold the root's writer lease (exclusive);
`grasp export` only reads them (Delta snapshots) and writes files.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from ..env import storage_root
from . import arguments
from .instance import report_export, report_observations, report_to_instance, report_writes


def add_table_commands(commands, wait_help: str) -> None:
    """Adds the `export` and `maintain` subcommands to the `grasp` parser."""
    export = commands.add_parser(
        "export", help="write mixtures and selections in the forms trainers take",
        description="Writes, per mixture, mixtures/<id>.json ({domain: weight} as byte shares, the Hugging Face "
                    "interleave_datasets form per document, a Megatron-style blend, an Olmix-style mix with "
                    "repetition factors) and <id>.yaml, and per selection "
                    "selections/<id>.parquet (source, doc_id, byte offset, n_bytes), plus export.json.")
    export.add_argument("--root", help="storage root (default: GRASP_ROOT or .grasp/storage)")
    export.add_argument("--config", help="JSON or TOML overrides; the [export] section applies")
    export.add_argument("--out", help="destination folder or URI (default: <root>/exports)")
    export.add_argument("--megatron-prefix",
                        help="data-path prefix per domain ({domain}) or per corpus file ({source})")
    export.add_argument("--method", action="append", help="export only this method (repeatable)")
    export.add_argument("--training-bytes", type=int,
                        help="run size the repetition factors are counted at (default: the whole corpus once)")
    export.set_defaults(handler=command_export)
    maintain = commands.add_parser(
        "maintain", help="compact, checkpoint and vacuum the tables, keeping what lineage needs",
        description="Sets the retention properties, compacts small files, writes checkpoints and vacuums files "
                    "that no kept version (every version the lineage records, or with --keep outputs only what "
                    "reproducing selections and mixtures needs) references.")
    maintain.add_argument("--root", help="storage root (default: GRASP_ROOT or .grasp/storage)")
    maintain.add_argument("--config", help="JSON or TOML overrides; the [maintenance] section applies")
    maintain.add_argument("--table", action="append", help="maintain only this table (repeatable)")
    maintain.add_argument("--keep", choices=["lineage", "outputs"], help="which versions vacuum keeps readable")
    maintain.add_argument("--retention-hours", type=int, help="vacuum only files removed at least this long ago")
    maintain.add_argument("--dry-run", action="store_true", help="report what would be deleted, change nothing")
    maintain.add_argument("--wait", type=arguments.seconds, default=0.0, metavar="SECONDS", help=wait_help)
    maintain.set_defaults(handler=command_maintain)
    update = commands.add_parser(
        "mixture-update", help="re-optimise the mixture for a changed domain set, without retraining",
        description="Reads, cuts and splits the new corpus with the run's corpus settings, sketches only the "
                    "domains that are new or whose content changed (with the stored reference model and "
                    "projection), keeps the stored sketch statistics of the others, and re-optimises the GRASP "
                    "mixture from the stored surrogate, checked against safer candidates by a few dev retrainings "
                         "([mixture_update] check_samples); writes the mixture_updates table. Nothing is refitted.")
    update.add_argument("--corpus", required=True, help="the new corpus: Parquet/JSONL file, directory or glob")
    update.add_argument("--root", help="storage root of the existing run (default: GRASP_ROOT or .grasp/storage)")
    update.add_argument("--profile", default="demo", choices=["smoke", "demo"], help="the run's profile")
    update.add_argument("--config", help="the run's JSON or TOML overrides ([corpus], [mixture], [mixture_update])")
    update.add_argument("--wait", type=arguments.seconds, default=0.0, metavar="SECONDS", help=wait_help)
    update.set_defaults(handler=command_mixture_update)


def _section(args, name: str, flags: dict):
    """The `name` section of the demo profile with --config and the given flags (None = not given) applied."""
    from grasp_pipeline.config import load_params, with_overrides

    params = load_params("demo", args.config)
    given = {k: v for k, v in flags.items() if v is not None}
    return getattr(with_overrides(params, {name: given}) if given else params, name)


def command_export(args) -> int:
    from grasp_pipeline.infra import progress
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.ops.export import export_for_trainers

    from .console import ConsoleProgress

    params = _section(args, "export", {"destination": args.out, "megatron_prefix": args.megatron_prefix,
                                       "methods": tuple(args.method) if args.method else None,
                                       "training_bytes": args.training_bytes})
    store = DeltaStore(storage_root(args.root))
    with progress.reporting(ConsoleProgress()):
        result = export_for_trainers(store, params)
    manifest = result.artifacts["export.json"]
    for mixture_id, entry in manifest["mixtures"].items():
        print(f"mixture {mixture_id}: {json.dumps(entry['domain_weights'], sort_keys=True)}")
    for selection_id, entry in manifest["selections"].items():
        print(f"selection {selection_id}: {entry['rows']} examples, {entry['bytes']} bytes, "
              f"{json.dumps(entry['domains'], sort_keys=True)}")
    reported = report_to_instance(lambda instance: report_export(
        instance, result.metrics["destination"], result.metrics, result.reads))
    print(f"wrote {result.metrics['files']} files under {result.metrics['destination']} from "
          f"{json.dumps(result.reads, sort_keys=True)}; {reported}")
    return 0


def command_maintain(args) -> int:
    import polars as pl

    from grasp_pipeline.infra import progress
    from grasp_pipeline.infra.lease import RootLease
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.ops.maintenance import format_reports, maintain

    from ..maintenance import observation
    from .console import ConsoleProgress

    params = _section(args, "maintenance", {"tables": tuple(args.table) if args.table else None, "keep": args.keep,
                                            "retention_hours": args.retention_hours,
                                            "dry_run": True if args.dry_run else None})
    store = DeltaStore(storage_root(args.root))
    lease = RootLease(store.root, owner=f"grasp-maintain:{uuid.uuid4().hex[:12]}", purpose="grasp maintain")
    with lease.held(wait=args.wait), progress.reporting(ConsoleProgress()):
        reports = maintain(store, params)
    with pl.Config(tbl_rows=40, tbl_hide_dataframe_shape=True):
        print(format_reports(reports, params.dry_run))
    if params.dry_run:
        print(f"dry run: nothing changed ({dataclasses.asdict(params)})")
        return 0
    reported = report_to_instance(lambda instance: report_observations(
        instance, [observation(r, "grasp maintain") for r in reports]))
    print(f"maintained {len(reports)} tables under {store.root}; {reported}")
    return 0


def command_mixture_update(args) -> int:
    from pathlib import Path

    import polars as pl

    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.infra import progress
    from grasp_pipeline.infra.commits import recording
    from grasp_pipeline.infra.lease import RootLease
    from grasp_pipeline.infra.lineage import index_lineage
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.stages import run_mixture_update

    from .console import ConsoleProgress

    corpus = str(Path(args.corpus).resolve()) if "*" not in args.corpus else args.corpus
    params = with_overrides(load_params(args.profile, args.config), {"corpus": {"corpus_path": corpus}})
    store = DeltaStore(storage_root(args.root))
    lease = RootLease(store.root, owner=f"grasp-mixture-update:{uuid.uuid4().hex[:12]}",
                      purpose="grasp mixture-update")
    recorded = {**dataclasses.asdict(params.mixture_update), "corpus_path": corpus}
    with lease.held(wait=args.wait), recording("mixture_update (grasp mixture-update)", params=recorded), \
            progress.reporting(ConsoleProgress()):
        result = run_mixture_update(store, params.workload.build(), params.corpus, params.workload.example_bytes,
                                    params.mixture, params.mixture_update)
        index_lineage(store, result.writes)
    reported = report_to_instance(lambda instance: report_writes(instance, store, result.writes,
                                                                  "grasp mixture-update"))
    frame = store.read("mixture_updates", version=result.writes[0].version)
    with pl.Config(tbl_rows=40, tbl_cols=20, float_precision=3, tbl_hide_dataframe_shape=True, fmt_str_lengths=60):
        print(frame.select("mixture_id", "domain", "weight", "predicted_utility", "budget"))
    first = frame.row(0, named=True)
    print(f"new domains {first['new_domains']}, revised {first['revised_domains']}, removed "
          f"{first['removed_domains']}; sketched {first['sketched_examples']} pool and "
          f"{first['sketched_task_examples']} task examples and retrained {first['retrained_models']} models "
          f"in {first['seconds']:.1f} s; picked {first['candidate']} of {first['candidates']} "
          f"(dev gains over natural {first['candidate_dev_gains']}); wrote "
          f"mixture_updates version {result.writes[0].version}; {reported}")
    return 0

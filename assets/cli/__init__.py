"""`grasp` console script: materialise the whole graph through Dagster, then summarise.

Runs land in a persistent Dagster instance (DAGSTER_HOME, default `.grasp/dagster_home`
under the working folder), so `dagster dev -w workspace.yaml` started from the same folder
shows them with their metadata; progress goes to stderr (bars on a terminal, lines
otherwise) and the stage runs nest under one MLflow run per `grasp run`. `grasp lineage ID`
explains (and `--reproduce` rebuilds) a selection or mixture; `grasp config` prints a
profile's run config for the UI launchpad; `grasp select`, `grasp mixture`, `grasp export`
and `grasp maintain` work on the tables without a Dagster run and report what they did to
the instance. Every command that commits to the tables holds the root's writer lease
(grasp_pipeline/infra/lease.py; `--wait SECONDS` waits for another writer instead of stopping).

The package is the command line only (nothing else imports it): this module the parser and the run,
lineage, config and recurate commands; `table_commands` export, maintain and mixture-update;
`console` the progress display; `instance` the command line's Dagster instance; `report` the
summary of any finished run, from its tables.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
import uuid
from pathlib import Path

from grasp_pipeline.infra.secrets import redact, split_credentials

from ..env import storage_root
from . import arguments
from .check import add_check
from .instance import ensure_dagster_home, owner_tags, release_dead_runs, report_to_instance, report_writes
from .report import add_report
from .table_commands import add_table_commands


def error_chain(error) -> str:
    """Returns the messages of a Dagster SerializableErrorInfo and its causes, outermost first."""
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    return "\n  caused by: ".join(messages)


def flag_overrides(args) -> dict:
    """Returns the {section: {field: value}} overrides of --corpus, --device and --workload."""
    overrides: dict[str, dict] = {}
    if getattr(args, "corpus", None):
        local = "*" not in args.corpus and "://" not in args.corpus  # globs and URIs are kept as typed
        overrides["corpus"] = {"corpus_path": str(Path(args.corpus).resolve()) if local else args.corpus}
    workload = {}
    if getattr(args, "device", None):
        workload["device"] = args.device
    if getattr(args, "workload", None):
        from grasp_pipeline.workloads import workload_parameter_names

        workload_parameter_names(args.workload)  # an unknown name fails here, listing the known ones
        workload["name"] = args.workload
    if workload:
        overrides["workload"] = workload
    return overrides


def command_run(args) -> int:
    ensure_dagster_home()
    import dataclasses

    from dagster import DagsterInstance

    from grasp_pipeline.config import load_params, with_overrides

    began = time.perf_counter()
    params = with_overrides(load_params(args.profile, args.config), flag_overrides(args))
    root = storage_root(args.root)
    print(f"grasp run: profile={args.profile} workload={params.workload.name} root={redact(root)} "
          f"DAGSTER_HOME={os.environ['DAGSTER_HOME']}; loading the code location", flush=True)
    from grasp_pipeline.infra import progress
    from grasp_pipeline.infra.lease import RootLease
    from grasp_pipeline.infra.lineage import check_tables_readable
    from grasp_pipeline.infra.storage import DeltaStore

    from ..definitions import defs
    from ..jobs import materialize_everything
    from ..leases import LEASE_TAG
    from ..materialize import MLFLOW_PARENT_TAG
    from ..resources import GraspStorage
    from ..run_config import run_config_for
    from .console import ConsoleProgress
    from .instance import reporting_waits

    tracking_uri = tracking_uri_without_credentials(args.tracking_uri)
    run_config = run_config_for(params, root, tracking_uri)
    run_config["resources"]["storage"]["config"]["system_metrics"] = bool(args.system_metrics)
    instance = DagsterInstance.get()
    for run_id in release_dead_runs(instance):
        print(f"grasp run: released Dagster run {run_id}: its process was killed; its pool slots are free again",
              file=sys.stderr)
    check_tables_readable(DeltaStore(root))  # a damaged table stops the run before its first commit
    tracker = GraspStorage(root=root, tracking_uri=tracking_uri).tracker()
    lease = RootLease(root, owner=f"grasp-run:{uuid.uuid4().hex[:12]}", purpose=f"grasp run --profile {args.profile}")
    # a second writer of this root waits or stops here, before any table or MLflow run
    with lease.held(wait=args.wait), tracker.run(f"grasp run --profile {args.profile}", tags={
            "grasp.profile": args.profile, "grasp.workload": params.workload.name}) as parent:
        # the whole configuration, once, on the parent: of the workload section, the active workload's fields only
        parent.log_params({**dataclasses.asdict(params), "workload": params.workload.active_fields()})
        with progress.reporting(ConsoleProgress()), reporting_waits(), \
                _summary_on_interrupt(instance, root, parent.run_id):
            results = materialize_everything(defs, instance, run_config, tags={
                "grasp/profile": args.profile, LEASE_TAG: lease.owner, MLFLOW_PARENT_TAG: parent.run_id,
                **owner_tags()}, checkpoint=raise_pending_interrupt)
        stage_seconds = _stage_seconds(instance, results)
        parent.log_metrics({**{f"stage_seconds.{k}": v for k, v in stage_seconds.items()},
                            "total_seconds": time.perf_counter() - began})
        parent.set_tags({"dagster.run_ids": ",".join(r.run_id for r in results)})
        if not all(r.success for r in results):
            parent.mark_failed()
    return _print_outcome(root, results, stage_seconds, began, f"{parent.run_id} ({tracker.tracking_uri})")


def _print_outcome(root: str, results, stage_seconds: dict, began: float, mlflow_run: str) -> int:
    """Prints the summary of a finished `grasp run` (0), or its failed steps and what it committed (1)."""
    from grasp_pipeline.evaluation.summary import format_summary
    from grasp_pipeline.infra.storage import DeltaStore

    run_ids = ", ".join(r.run_id for r in results)
    failed = [r for r in results if not r.success]
    if failed:
        for event in failed[0].all_events:
            if event.is_failure and event.event_specific_data is not None:
                error = getattr(event.event_specific_data, "error", None)
                if error is not None:
                    print(f"step {event.step_key} failed: {redact(error_chain(error))}", file=sys.stderr)
        print(f"grasp run FAILED (Dagster runs {run_ids}; MLflow run {mlflow_run}). "
              f"{committed_before_failure(DeltaStore(root), results)}", file=sys.stderr)
        return 1
    print(format_summary(DeltaStore(root), stage_seconds))
    print(f"total wall seconds: {time.perf_counter() - began:.1f}; Dagster runs {run_ids}; MLflow run {mlflow_run}")
    return 0


def tracking_uri_without_credentials(uri: str | None) -> str:
    """The tracking URI for run config: credentials move to MLFLOW_TRACKING_USERNAME/PASSWORD (the
    environment the runs inherit), so the stored run config never holds them."""
    clean, user, password = split_credentials(uri or "")
    if user:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
    if password:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


def committed_before_failure(store, results) -> str:
    """What the runs of a failed `grasp run` committed (found by their run ids in the commits' lineage);
    a table whose log cannot be read is named, not fatal: this summary must always come out."""
    from grasp_pipeline.infra.lineage import commits_by_runs, unreadable_tables

    committed = commits_by_runs(store, [getattr(r, "run_id", r) for r in results])
    damaged = unreadable_tables(store)
    note = f" Damaged (Delta log unreadable, not checked): {', '.join(damaged)}." if damaged else ""
    if not committed:
        return f"No table was changed: every table is at its previous version.{note}"
    listed = ", ".join(f"{t}@{v}" for t, v in committed)
    return (f"Committed before the failure, each with its lineage in the commit: {listed}. Every other table is at "
            f"its previous version; rerunning repeats only what is missing or stale.{note}")


@contextlib.contextmanager
def _summary_on_interrupt(instance, root: str, parent_run_id: str):
    """On Ctrl-C (between or inside the Dagster runs) prints what the runs of this `grasp run` committed
    (found by their MLflow parent tag), then lets the interrupt end the command (exit 130)."""
    try:
        yield
    except KeyboardInterrupt:
        from dagster import RunsFilter

        from grasp_pipeline.infra.storage import DeltaStore

        from ..materialize import MLFLOW_PARENT_TAG

        runs = [r.run_id for r in instance.get_runs(RunsFilter(tags={MLFLOW_PARENT_TAG: parent_run_id}))]
        print(f"grasp run interrupted (Dagster runs {', '.join(runs) or 'none'}). "
              f"{committed_before_failure(DeltaStore(root), runs)}", file=sys.stderr, flush=True)
        raise


def _stage_seconds(instance, results) -> dict[str, float]:
    """Wall seconds of every step of the runs (from the instance's step stats)."""
    seconds = {}
    for result in results:
        for stat in instance.get_run_step_stats(result.run_id):
            if stat.end_time and stat.start_time:
                seconds[stat.step_key] = round(stat.end_time - stat.start_time, 1)
    return seconds


def command_lineage(args) -> int:
    import json

    from grasp_pipeline.infra.lineage import find_output, find_outputs, format_provenance, provenance
    from grasp_pipeline.infra.storage import DeltaStore
    from grasp_pipeline.ops.reproduce import reproduce

    root = storage_root(args.root)
    if "://" not in root and not Path(root).is_dir():
        raise FileNotFoundError(f"no storage root at {root}; pass --root or set GRASP_ROOT")
    store = DeltaStore(root)
    only = {"selection": "curated_selections", "mixture": "mixture_weights"}.get(args.kind)
    table, version = find_output(store, args.id, args.version, only)
    others = [t for t, _ in find_outputs(store, args.id, args.version) if t != table] if only is None else []
    if others:
        print(f"note: {args.id} is also a mixture id; this is the selection (pass --kind mixture for the "
              "mixture)", file=sys.stderr)
    found = provenance(store, table, version)
    found["id"] = args.id
    changed = _changed_code_versions(found) if args.reproduce else []
    outcome = reproduce(store, args.id, version, tolerance=args.tolerance, table=table) if args.reproduce else None
    if args.json:
        payload = {**found, "code_version_changes": changed}
        if outcome is not None:
            payload["reproduce"] = outcome
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        print(f"{args.id} is in {table}@{version}\n")
        print(format_provenance(found))
        for line in changed:
            print(f"note: {line}")
        if outcome is not None:
            reads = ", ".join(f"{t}@{v}" for t, v in sorted(outcome["reads"].items()))
            if outcome["matches"]:
                print(f"\nreproduce: MATCH: rebuilt {args.id} ({outcome['rows']} rows) from {reads}")
            else:
                print(f"\nreproduce: MISMATCH: rebuilt {args.id} from {reads}:", file=sys.stderr)
                for line in outcome["diff"]:
                    print(f"  {line}", file=sys.stderr)
    return 0 if outcome is None or outcome["matches"] else 1


def _changed_code_versions(found: dict) -> list[str]:
    """The asked-for asset, if its code version differs now (a reproduction may then differ)."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from ..catalog import stage_of
            from ..definitions import defs
        # lineage records the stage (op); its assets are the tables it writes, one code version
        current = {stage_of(spec.key.to_user_string()): spec.code_version for spec in defs.resolve_all_asset_specs()}
    except Exception:  # lineage must work without loading the code location
        return []
    row = found["chain"][0]
    if row["code_version"] and current.get(row["asset"]) not in (None, row["code_version"]):
        return [f"asset {row['asset']} was code version {row['code_version']}, now {current[row['asset']]}"]
    return []


def command_config(args) -> int:
    import yaml

    from grasp_pipeline.config import load_params, with_overrides

    from ..jobs import JOB_NAMES
    from ..run_config import job_run_config

    if args.job not in JOB_NAMES:
        raise ValueError(f"grasp config --job {args.job!r}: no such job; choose one of {', '.join(JOB_NAMES)}")
    params = with_overrides(load_params(args.profile, args.config), flag_overrides(args))
    config = job_run_config(args.job, params, storage_root(args.root) if args.root else None)
    print(f"# run config of {args.job}, profile {args.profile!r}: paste it into the launchpad's editor")
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def command_recurate(args) -> int:
    """`grasp select` / `grasp mixture`: re-curate from the existing tables, without refitting."""
    import dataclasses
    import json

    import polars as pl

    from grasp_pipeline import stages
    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.infra.commits import recording
    from grasp_pipeline.infra.lease import RootLease
    from grasp_pipeline.infra.lineage import index_lineage
    from grasp_pipeline.infra.storage import DeltaStore


    section = "selection" if args.command == "select" else "mixture"
    overrides = {section: {}}
    if args.budget_fraction is not None:  # one budget: selection, mixture and loop must agree (validation.py)
        overrides = {name: {"budget_fraction": args.budget_fraction} for name in ("selection", "mixture", "loop")}
    # another target for this re-curation only (the loop's, read from curation_rounds, otherwise)
    task_weights = {k: float(v) for k, v in (item.split("=", 1) for item in args.task_weight)} \
        if args.task_weight else None
    params = load_params("demo", args.config)
    params = with_overrides(params, overrides)
    section_params = getattr(params, section)
    store = DeltaStore(storage_root(args.root))
    stage_fn, table, asset = ((stages.run_curated_selection, "curated_selections", "curated_selection")
                              if section == "selection" else
                              (stages.run_mixture_weights, "mixture_weights", "mixture_weights"))
    lease = RootLease(store.root, owner=f"grasp-{args.command}:{uuid.uuid4().hex[:12]}",
                      purpose=f"grasp {args.command}")
    with lease.held(wait=args.wait), recording(f"{asset} (grasp {args.command})",
                                                params={**dataclasses.asdict(section_params),
                                                        "task_weights": task_weights}):
        result = stage_fn(store, section_params, task_weights)
        index_lineage(store, result.writes)
    reported = report_to_instance(lambda instance: report_writes(instance, store, result.writes,
                                                                  f"grasp {args.command}"))
    version = store.version(table)
    frame = store.read(table, version=version)
    with pl.Config(tbl_rows=40, tbl_cols=20, float_precision=3, tbl_hide_dataframe_shape=True, fmt_str_lengths=60):
        if section == "selection":
            print(frame.group_by("selection_id", "method", "budget").len().sort("method"))
        else:
            print(frame.pivot(on="domain", index=["mixture_id", "method", "predicted_utility"], values="weight"))
    print(f"wrote {table} version {version} from inputs {json.dumps(result.reads, sort_keys=True)}; "
          f"`grasp lineage ID` traces it; {reported}")
    return 0


WAIT_HELP = "wait this long for another writer of the root to finish (default: stop at once)"


def _add_run(commands) -> None:
    run = commands.add_parser("run", help="materialise the whole asset graph and print a summary")
    run.add_argument("--corpus", help="Parquet/JSONL file, directory or glob (default: the workload's corpus: "
                                      "the embedded text corpus, or the digits images for vision)")
    run.add_argument("--root", help="storage root for Delta tables and MLflow (default: .grasp/storage)")
    run.add_argument("--profile", default="demo", choices=["smoke", "demo"])
    run.add_argument("--config", help="JSON or TOML file of {section: {field: value}} overrides")
    run.add_argument("--device", help="torch device (cpu, cuda, …); overrides the config")
    # written out, not read from the registry: that would import torch for `grasp --help` (a test
    # keeps this list equal to the registry's and the default equal to the settings')
    run.add_argument("--workload", help="one of byte_mlp, byte_ngram, byte_transformer, hf_causal_lm, vision "
                                        "(default: byte_ngram); overrides the config (vision uses its digits "
                                        "corpus unless --corpus is given)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite under the root); credentials in "
                                            "it are moved to MLFLOW_TRACKING_USERNAME/PASSWORD, never stored")
    run.add_argument("--system-metrics", action="store_true",
                     help="sample CPU, memory and GPU use into every stage's MLflow run (needs psutil)")
    run.add_argument("--wait", type=arguments.seconds, default=0.0, metavar="SECONDS", help=WAIT_HELP)
    run.set_defaults(handler=command_run)


def _add_lineage(commands) -> None:
    lineage = commands.add_parser(
        "lineage", help="where a selection or mixture came from (and --reproduce it)",
        description="Finds the curated_selections or mixture_weights table version holding the id (newest "
                    "first) and prints its lineage: every table version it read, with asset, Dagster run, "
                    "MLflow run, code version, reference-model version and corpus content hash.")
    lineage.add_argument("id", metavar="SELECTION_OR_MIXTURE_ID", help="a selection_id or mixture_id")
    lineage.add_argument("--root", help="storage root (default: GRASP_ROOT or .grasp/storage)")
    lineage.add_argument("--kind", choices=["selection", "mixture"],
                         help="which table to look in (a selection and a mixture can share an id; default: "
                              "the selection, then the mixture)")
    lineage.add_argument("--version", type=int, help="look only in this table version")
    lineage.add_argument("--json", action="store_true", help="print one JSON object")
    lineage.add_argument("--reproduce", action="store_true",
                         help="rebuild it from the recorded table versions (Delta time travel) and parameters; "
                              "exit 1 with a diff if it does not match")
    lineage.add_argument("--tolerance", type=arguments.tolerance, default=1e-9, help="for weights, gains and utilities")
    lineage.set_defaults(handler=command_lineage)


def _add_config(commands) -> None:
    config = commands.add_parser("config", help="print a job's run config (YAML) for the UI launchpad")
    config.add_argument("--job", default="grasp_prepare", help="a job of assets/jobs.py (default: grasp_prepare)")
    config.add_argument("--profile", default="demo", choices=["smoke", "demo"])
    config.add_argument("--config", help="JSON or TOML file of {section: {field: value}} overrides")
    config.add_argument("--root", help="pin the storage root (default: the resource's, i.e. GRASP_ROOT)")
    config.add_argument("--workload", help="workload name (as for grasp run)")
    config.set_defaults(handler=command_config)


def _add_recurate(commands) -> None:
    for name, help_text in (("select", "re-curate selections from the existing surrogate and sketches"),
                            ("mixture", "re-optimise the domain mixture from the existing surrogate")):
        section = "selection" if name == "select" else "mixture"
        recurate = commands.add_parser(name, help=help_text,
                                       description=f"{help_text}; writes a new table version (no Dagster run).")
        recurate.add_argument("--root", help="storage root (default: GRASP_ROOT or .grasp/storage)")
        recurate.add_argument("--config", help=f"JSON or TOML overrides; the [{section}] section applies")
        recurate.add_argument("--budget-fraction", type=float, help="budget as a fraction of the pool")
        recurate.add_argument("--task-weight", action="append", metavar="TASK=WEIGHT",
                              help="weight of a task in the objective (repeatable; others weigh 1); "
                                   "default: the target the loop optimised (loop.task_weights)")
        recurate.add_argument("--wait", type=arguments.seconds, default=0.0, metavar="SECONDS", help=WAIT_HELP)
        recurate.set_defaults(handler=command_recurate)


def build_parser() -> argparse.ArgumentParser:
    """The `grasp` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="grasp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_lineage, _add_config, _add_recurate, add_report):
        add(commands)
    add_table_commands(commands, wait_help=WAIT_HELP)
    add_check(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Every failure is one line on stderr (credentials redacted) and an exit code:
    2 for bad input or a busy root, 1 for anything else, 130 for Ctrl-C; `grasp --debug …` re-raises
    instead, for the traceback."""
    args = build_parser().parse_args(argv)
    from deltalake.exceptions import DeltaError

    from grasp_pipeline.corpus import CorpusError
    from grasp_pipeline.infra.lease import LeaseHeld
    from grasp_pipeline.infra.tracking import TrackingError

    if not args.debug:
        _quiet_interrupted_connection_close()
        _keep_swallowed_interrupts()
    try:
        code = args.handler(args)
        raise_pending_interrupt()  # a Ctrl-C Python swallowed late in the command still ends it as one
        return code
    except Exception as error:
        if args.debug:
            raise
        if isinstance(error, (ValueError, FileNotFoundError, FileExistsError, CorpusError, LeaseHeld)):
            print(f"grasp: error: {redact(str(error))}", file=sys.stderr)  # bad input, busy root: our own words
            return 2
        kind = ("table storage" if isinstance(error, DeltaError) else "tracking" if isinstance(error, TrackingError)
                else type(error).__name__)
        print(f"grasp: error ({kind}): {redact(_one_line(error))} (rerun with `grasp --debug …` for the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("grasp: interrupted; every table is at its last committed version (`grasp lineage` lists them)",
              file=sys.stderr)
        return 130


def _quiet_interrupted_connection_close() -> None:
    """A Ctrl-C that lands while SQLAlchemy closes a connection (the Dagster or MLflow SQLite stores) is
    logged by its pool with a traceback before it re-raises; the interrupt then reaches `main`, which
    reports it in one line. Only that record is dropped: every other pool warning still reaches stderr."""
    import logging

    pool = logging.getLogger("sqlalchemy.pool")  # the pool classes log under sqlalchemy.pool.impl.<Pool>
    if any(getattr(h, "grasp_quiet", False) for h in pool.handlers):
        return  # `main` runs more than once in one process (tests): one handler, not one per call
    handler = logging.StreamHandler(sys.stderr)
    handler.grasp_quiet = True
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt)))
    pool.addHandler(handler)
    pool.propagate = False


_SWALLOWED_INTERRUPT = threading.Event()


def _keep_swallowed_interrupts() -> None:
    """A Ctrl-C that lands while a finaliser or a garbage-collector callback runs (SQLAlchemy registers
    such callbacks) is "ignored" by Python: printed with a traceback and lost, and the run went on. It is
    recorded instead, and raised again at the next check point (`raise_pending_interrupt`: before each
    Dagster run of `grasp run`, and when a command returns). Every other unraisable error still prints."""
    original = sys.unraisablehook
    if getattr(original, "grasp_keeps_interrupts", False):
        return  # already installed by an earlier `main` in this process

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _SWALLOWED_INTERRUPT.set()
        else:
            original(unraisable)

    hook.grasp_keeps_interrupts = True
    sys.unraisablehook = hook


def raise_pending_interrupt() -> None:
    """Raises the KeyboardInterrupt a finaliser swallowed since the last check, if any."""
    if _SWALLOWED_INTERRUPT.is_set():
        _SWALLOWED_INTERRUPT.clear()
        raise KeyboardInterrupt


def _one_line(error: BaseException) -> str:
    """The error's message without a library's multi-line backtrace (delta-rs appends Rust frames)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())

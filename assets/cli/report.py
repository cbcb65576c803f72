"""`grasp report`: the summary `grasp run` prints, read again from the tables of any finished run
(launched by `grasp run`, the UI or a schedule), as text, Markdown or JSON."""

from __future__ import annotations

import json

from ..env import storage_root

VERDICT_TABLES = ("curation_test_verdict", "validation_verdict")


def add_report(commands) -> None:
    report = commands.add_parser(
        "report", help="print the summary of the run whose tables are under the root (any run, UI ones included)",
        description="Reads the tables under the root and prints what `grasp run` prints at its end (text), or the "
                    "held-out and dev verdicts as Markdown (md) or JSON (json). Writes nothing.")
    report.add_argument("--root", help="storage root (default: GRASP_ROOT or .grasp/storage)")
    report.add_argument("--format", choices=["text", "md", "json"], default="text",
                        help="text: the whole summary; md, json: the verdicts with their intervals")
    report.set_defaults(handler=command_report)


def command_report(args) -> int:
    from grasp_pipeline.evaluation.summary import format_summary
    from grasp_pipeline.evaluation.verdict_report import read_verdict
    from grasp_pipeline.infra.storage import DeltaStore

    store = DeltaStore(storage_root(args.root))
    if not store.exists("surrogates"):
        raise FileNotFoundError(f"{store.root}: no finished run here (no surrogates table); `grasp run --root …` "
                                "or a UI run writes one")
    if args.format == "text":
        print(format_summary(store))
        return 0
    verdicts = {table: read_verdict(store, table) for table in VERDICT_TABLES}
    if args.format == "json":
        print(json.dumps({table: None if v is None else {"level": v.level, "rows": v.records(),
                                                         "mixtures": v.mixtures()}
                          for table, v in verdicts.items()}, indent=2, ensure_ascii=False))
        return 0
    print("\n\n".join(v.markdown() if v is not None else f"**{table}**: not written yet"
                      for table, v in verdicts.items()))
    return 0

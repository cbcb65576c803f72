"""`grasp check`: validate the settings and read the corpus as `corpus_shards` would, writing nothing.

It prints, per domain, the documents read, the examples cut and their bytes, what the split would
put in the pool, dev and test, and how many examples it would leave out and why, so a corpus and a
config can be tried before a run commits anything (no tables, no Dagster instance, no MLflow run).
"""

from __future__ import annotations

import polars as pl

from grasp_pipeline.infra.secrets import redact


def add_check(commands) -> None:
    check = commands.add_parser(
        "check", help="validate settings and read the corpus (counts per domain, what the split drops), "
                      "writing nothing",
        description="Validates the settings, reads the corpus with its column mapping and splits it exactly as "
                    "the corpus_shards stage would, and prints documents, examples and bytes per domain and what "
                    "the split would leave out and why. Writes no table, run or file.")
    check.add_argument("--config", help="JSON or TOML file of {section: {field: value}} overrides")
    check.add_argument("--corpus", help="Parquet/JSONL/Arrow file, directory or glob, local or s3://… "
                                        "(default: the config's corpus.corpus_path, else the workload's corpus)")
    check.add_argument("--profile", default="demo", choices=["smoke", "demo"])
    check.add_argument("--workload", help="workload name (as for grasp run); its example cutting applies")
    check.set_defaults(handler=command_check)


def command_check(args) -> int:
    from grasp_pipeline.config import load_params, with_overrides
    from grasp_pipeline.corpus import CorpusMapping
    from grasp_pipeline.stages.corpus_shards import split_corpus

    from . import flag_overrides  # the package imports this module first: read at call time

    params = with_overrides(load_params(args.profile, args.config), flag_overrides(args))
    CorpusMapping.from_params(params.corpus)  # a bad field name or pattern fails before any file is read
    workload = params.workload.build()
    pool, tasks, report, cut, split, _ = split_corpus(params.corpus, params.workload.example_bytes, workload)
    shown = params.corpus.corpus_path or "the workload's default corpus"
    print(f"grasp check: settings valid (profile {args.profile}, workload {params.workload.name}); "
          f"corpus {redact(shown)}: {len(report.files)} files, {report.documents} documents, "
          f"{len(report.domains)} domains. Nothing was written.")
    table = per_domain(report.domains, cut, pool, tasks)
    print(format_table(table))
    if report.replaced_bytes:
        print(f"{report.replaced_bytes} undecodable bytes were replaced by U+FFFD (not fatal).")
    print(dropped_lines(table, split, params.corpus))
    return 0


def per_domain(documents: dict[str, int], cut: pl.DataFrame, pool: pl.DataFrame, tasks: pl.DataFrame) -> pl.DataFrame:
    """One row per domain: documents, examples, bytes, pool, dev, test and unused (examples in none of them)."""
    counts = [pl.DataFrame({"domain": list(documents), "documents": list(documents.values())},
                           schema={"domain": pl.Utf8, "documents": pl.Int64}), cut,
              pool.group_by("domain").agg(pool=pl.len()),
              *(tasks.filter(pl.col("split") == s).group_by("domain").agg(pl.len().alias(s)) for s in ("dev", "test"))]
    table = counts[0]
    for frame in counts[1:]:
        table = table.join(frame, on="domain", how="left")
    table = table.fill_null(0).sort("domain")
    return table.with_columns(unused=pl.col("examples") - pl.col("pool") - pl.col("dev") - pl.col("test"))


def format_table(table: pl.DataFrame) -> str:
    columns = table.columns
    rows = [[str(v) for v in row] for row in table.iter_rows()]
    rows.append(["total", *(str(table[c].sum()) for c in columns[1:])])
    widths = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(columns)]
    line = lambda cells: "  ".join(  # noqa: E731
        cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(columns), *(line(r) for r in rows)])


def dropped_lines(table: pl.DataFrame, split, corpus) -> str:
    """What the split leaves out, by reason (the guard's counts from the split report, the rest by difference)."""
    unused = int(table["unused"].sum())
    guard = split.pool_dropped + split.dev_dropped + split.pool_exact_dropped
    bound = (f"beyond corpus.pool_examples_per_domain = {corpus.pool_examples_per_domain}"
             if corpus.pool_examples_per_domain else "")
    reasons = [
        (split.pool_exact_dropped, "pool examples identical to a dev or test example"),
        (split.pool_dropped, f"pool examples at Jaccard ≥ corpus.near_duplicate_threshold = "
                             f"{corpus.near_duplicate_threshold} to a dev or test example"),
        (split.dev_dropped, "dev examples that near-duplicate a test example"),
        (unused - guard, f"at the ends of held-out documents (corpus.split_margin = {corpus.split_margin})"
                         + (f" or {bound}" if bound else "")),
    ]
    lines = [f"The split would leave out {unused} of {int(table['examples'].sum())} examples:"]
    lines += [f"  {n:>8}  {why}" for n, why in reasons if n]
    return "\n".join(lines if unused else ["The split would leave out no example."])

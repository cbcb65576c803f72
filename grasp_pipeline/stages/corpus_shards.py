"""Corpus stage: the pool (`corpus_shards`) and the held-out task sets (`task_sets`)."""

from __future__ import annotations

import polars as pl

from .. import corpus as corpus_lib
from ..config.params import CorpusParams
from ..infra import progress
from ..infra.commits import fingerprint
from ..infra.storage import DeltaStore
from ..workloads.base import Workload
from .base import StageResult, stage


@stage
def run_corpus_shards(store: DeltaStore, params: CorpusParams, example_bytes: int,
                      workload: Workload | None = None) -> StageResult:
    """Reads the corpus, cuts examples, writes `corpus_shards` (the pool) and `task_sets`.

    The workload may bring its own corpus (`default_corpus`, used when `corpus_path` is
    empty), keep documents whole (`whole_documents`: one row = one example, e.g. an image),
    cut them its own way (`example_cuts(text)`: byte cut points,
                          e.g. token windows) and label examples (`example_labels`: a `label` column in the pool).
    """
    pool, tasks, report, cut, split, sources = split_corpus(params, example_bytes, workload)
    build_id = pool["build_id"][0]
    result = StageResult()
    result.write(store, "corpus_shards", pool)
    result.write(store, "task_sets", tasks)
    result.write(store, "corpus_sources", sources.with_columns(build_id=pl.lit(build_id)))
    result.metrics = {
        "documents": report.documents, "replaced_bytes": report.replaced_bytes,
        "examples_cut": int(cut["examples"].sum()), "pool_examples": pool.height, "task_examples": tasks.height,
        "domains": pool["domain"].n_unique(), "shards": pool["shard"].n_unique(),
        "corpus_content_sha1": fingerprint(sorted(pool["content_sha1"].to_list())), "build_id": build_id,
        **split.metrics(),
    }
    result.artifacts["ingest_report.json"] = {
        "files": list(report.files), "documents_per_domain": report.domains,
        "pool_per_domain": dict(pool.group_by("domain").len().sort("domain").iter_rows()),
    }
    return result


def split_corpus(params: CorpusParams, example_bytes: int,
                 workload: Workload | None = None
                 ) -> tuple[pl.DataFrame, pl.DataFrame, object, pl.DataFrame, corpus_lib.SplitReport, pl.DataFrame]:
    """Returns (pool, task sets, ingest report, examples cut, split report, sources) of `params.corpus_path`
    as `run_corpus_shards` writes them (build_id column included), without writing anything; the
    examples cut are counted per domain (columns domain, examples, bytes: their UTF-8 bytes), and per
    domain and source in `sources` (domain, source, documents, examples, bytes: the whole corpus, before
    the split and the pool cap, so a trainer's per-file datasets can be weighted: ops/export.py)."""
    phases = progress.task("corpus", total=3, unit="phase")
    documents, report, target_domains = _read(params, workload)
    phases.advance()
    examples = corpus_lib.cut_examples(documents, example_bytes,
                                       whole_documents=bool(getattr(workload, "whole_documents", False)),
                                       cutter=getattr(workload, "example_cuts", None))
    phases.advance()
    cut = examples.group_by("domain").agg(examples=pl.len(), bytes=pl.col("n_bytes").sum()).sort("domain")
    sources = examples.group_by("domain", "source").agg(
        documents=pl.col("doc_id").n_unique().cast(pl.Int64), examples=pl.len().cast(pl.Int64),
        bytes=pl.col("n_bytes").sum().cast(pl.Int64)).sort("domain", "source")
    pool, tasks, split = corpus_lib.split_and_report(
        examples, task_examples_per_domain=params.task_examples_per_domain,
        pool_examples_per_domain=params.pool_examples_per_domain or None,
        shard_size=params.shard_size, seed=params.seed, test_fraction=params.test_fraction,
        split_margin=params.split_margin, near_duplicate_threshold=params.near_duplicate_threshold,
        target_domains=target_domains)
    phases.advance()
    phases.close()
    # the whole corpus's size per domain, before the split and the pool cap: what a trainer's
    # per-domain datasets hold, so the export can state a mixture in their units (ops/export.py)
    sizes = cut.join(pl.DataFrame({"domain": list(report.domains), "documents": list(report.domains.values())},
                                  schema={"domain": pl.Utf8, "documents": pl.Int64}), on="domain", how="left")
    pool = pool.join(sizes.select("domain", domain_documents="documents",
                                  domain_examples=pl.col("examples").cast(pl.Int64),
                                  domain_bytes=pl.col("bytes").cast(pl.Int64)),
                     on="domain", how="left", maintain_order="left")
    # corpus.natural decides once, here, what every later stage calls the natural mixture
    size = pl.col("domain_examples").first() if params.natural == "corpus" else pl.len()
    natural = pool.group_by("domain").agg(size=size.cast(pl.Float64))
    pool = pool.join(natural.select("domain", domain_natural=pl.col("size") / pl.col("size").sum()), on="domain",
                     how="left", maintain_order="left")
    if getattr(workload, "example_labels", None) is not None:  # classification: selections balance labels
        pool = pool.with_columns(label=pl.Series(workload.example_labels(pool["text"].to_list()), dtype=pl.Utf8))
    # one id per build ties the pool to its task sets: downstream stages refuse a pool and tasks
    # from different builds (two builds interleaved on one root), naming both
    build_id = "cb-" + fingerprint(sorted(pool["content_sha1"].to_list()), pool["example_id"].sort().to_list(),
                                   tasks["example_id"].sort().to_list(), tasks["task"].to_list())
    return (pool.with_columns(build_id=pl.lit(build_id)), tasks.with_columns(build_id=pl.lit(build_id)), report,
            cut, split, sources)


def _read(params: CorpusParams, workload: Workload | None) -> tuple[pl.DataFrame, object, tuple[str, ...]]:
    """(documents, ingest report, target-only domains) of the corpus and of `corpus.target_path`'s
    evaluation documents, read with the same fields and limits."""
    limits, mapping = corpus_lib.IngestLimits.from_params(params), corpus_lib.CorpusMapping.from_params(params)
    documents, report = corpus_lib.load_documents(params.corpus_path or getattr(workload, "default_corpus", None),
                                                  limits, mapping)
    if not params.target_path:
        return documents, report, params.target_domains
    documents, report, added = corpus_lib.with_targets(documents, report,
                                                       *corpus_lib.load_documents(params.target_path, limits, mapping))
    return documents, report, (*params.target_domains, *added)

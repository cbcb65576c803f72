#!/usr/bin/env python3
"""Add labelled dirt to the embedded corpus, grasp_pipeline/data/default_corpus.jsonl.gz.

Reads a corpus of clean documents (the output of build_default_corpus.py, or the shipped
file: any dirt already in it is stripped first), adds exact duplicates, near duplicates,
boilerplate, garbled and mislabelled documents with `grasp_pipeline.corpus.dirt.add_dirt`
(shares, sources and seed: data/PROVENANCE.md), and writes it back. Deterministic: the same
input and seed give a byte-identical file, and rerunning on its own output changes nothing.

    python scripts/add_corpus_dirt.py                      # rewrite the shipped corpus in place
    python scripts/add_corpus_dirt.py --corpus clean.jsonl.gz --out dirty.jsonl.gz --seed 0
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
from pathlib import Path

import polars as pl

from grasp_pipeline.corpus import DEFAULT_CORPUS, cut_examples
from grasp_pipeline.corpus.dirt import DIRT_SEED, EXAMPLE_BYTES, add_dirt, corpus_bytes, read_records
from grasp_pipeline.corpus.labels import CLEAN, DIRT_KINDS


def summarise(records: list[dict]) -> str:
    """Returns a Markdown table per domain: clean documents, clean examples, dirt documents per
    kind (one example each) and the dirt share of the domain's examples."""
    docs = pl.DataFrame([{k: r[k] for k in ("id", "domain", "source", "text", "dirt")} for r in records])
    examples = cut_examples(docs.rename({"id": "doc_id"}), EXAMPLE_BYTES)
    counts = collections.Counter(zip(examples["domain"].to_list(), examples["dirt"].to_list()))
    documents = collections.Counter(r["domain"] for r in records if r["dirt"] == CLEAN)
    rows = ["| domain | clean documents | clean examples | " + " | ".join(DIRT_KINDS) + " | dirt share |",
            "| --- |" + " ---: |" * (len(DIRT_KINDS) + 3)]
    for domain in sorted(documents):
        dirt = sum(counts[domain, k] for k in DIRT_KINDS)
        total = dirt + counts[domain, CLEAN]
        rows.append(f"| `{domain}` | {documents[domain]} | {counts[domain, CLEAN]:,} | "
                    + " | ".join(f"{counts[domain, k]:,}" for k in DIRT_KINDS) + f" | {dirt / total:.1%} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="gzipped JSONL corpus to read")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: --corpus, in place)")
    parser.add_argument("--seed", type=int, default=DIRT_SEED, help="seed of every random choice")
    args = parser.parse_args(argv)

    records = add_dirt(read_records(args.corpus.read_bytes()), seed=args.seed)
    data = corpus_bytes(records)
    out = args.out or args.corpus
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(summarise(records))
    raw = gzip.decompress(data)
    print(f"\nwrote {out}: {len(data):,} bytes gzipped, sha256 {hashlib.sha256(data).hexdigest()}; "
          f"{len(raw):,} bytes uncompressed, sha256 {hashlib.sha256(raw).hexdigest()}")


if __name__ == "__main__":
    main()

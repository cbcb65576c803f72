"""The corpus stage's settings (what is read, how it is split, what the natural mixture is)."""

from __future__ import annotations

from dataclasses import dataclass

from ..infra.fields import doc


@dataclass(frozen=True)
class CorpusParams:
    corpus_path: str = doc("Parquet/JSONL file, directory or glob (local or s3://…) with text and domain "
                           "fields; empty = the embedded default corpus.", "")
    text_field: str = doc("Field (JSON) or column (Parquet) holding each document's text; dotted keys reach "
                          "nested objects or structs (e.g. content.body).", "text")
    domain_field: str = doc("Field or column holding each document's domain (e.g. metadata.source); a Hive "
                            "folder `<domain_field>=value` in the path supplies it where records lack it.",
                            "domain")
    id_field: str = doc("Optional field or column with a unique document id (else '<file>:<row>').", "id")
    domain_from_path: str = doc("Take every document's domain from its file's path under the corpus root "
                                "instead: a pattern with one {domain}, e.g. {domain}/*.jsonl, "
                                "lang={domain}/** or *_{domain}.parquet; empty = from domain_field.", "")
    task_examples_per_domain: int = doc("Held-out examples per domain forming its task set (dev and test).", 96,
                                        minimum=2)
    test_fraction: float = doc("Share of each task set held out as `test` (scored only by curation_test; "
                               "everything that fits, chooses or selects sees `dev`).", 0.5, above=0, below=1)
    split_margin: int = doc("Examples skipped at each end of a held-out (test or dev) document, so held-out text "
                            "never borders text of another role (a document of at most 2 × margin + 1 examples is "
                            "used whole).", 8, minimum=0)
    near_duplicate_threshold: float = doc("Jaccard similarity (16-character shingles) at or above which a pool "
                                          "example near a test or dev example, or a dev example near a test one, is "
                                          "dropped, across all domains.", 0.5, above=0, maximum=1)
    pool_examples_per_domain: int = doc("Pool bound per domain (0 = every example).", 400, minimum=0)
    target_domains: tuple[str, ...] = doc("Target-only domains: task sets (dev, test) but no pool examples, so "
                                          "curation is judged on text it cannot train on (RegMix's held-out "
                                          "Pile-CC); weigh them in loop.task_weights.", ())
    target_path: str = doc("A user's own evaluation documents (file, directory or glob, local or s3://…, read "
                           "with the corpus's fields): each of their domains is target-only like "
                           "target_domains (their task sets are task_examples_per_domain of their examples; pool "
                           "text near those is dropped); a domain the corpus has too is an error.", "")
    natural: str = doc("What the `natural` mixture is, the reference every mixer is judged against and the loop's "
                       "first selection counts: corpus = each domain's share of the whole corpus's examples (before "
                       "the split and the pool cap; for text, byte shares to within 1%); pool = its share of the "
                       "capped pool (uniform when every domain reaches pool_examples_per_domain).", "corpus",
                       choices=("corpus", "pool"))
    shard_size: int = doc("Pool examples per shard (the unit of sketching).", 256, minimum=1)
    seed: int = doc("Seed of the pool sample.", 0, minimum=0)
    max_record_bytes: int = doc("Largest document (UTF-8 bytes of one record's text) ingestion accepts; a bigger one "
                                "is an error naming file and row.", 64 * 2**20, minimum=1)
    max_file_bytes: int = doc("Largest corpus file, in bytes after decompression.", 16 * 2**30, minimum=1)
    max_decompression_ratio: float = doc("A .gz file may decompress to at most this many times its size (past "
                                         "that it is refused as a likely decompression bomb).", 200.0, minimum=1)

"""`split_pool_and_tasks`: examples to a sharded training pool and one held-out task set per domain,
whole documents apart, with a near-duplicate guard (`split_and_report` also says what it held out)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from .errors import CorpusError, require_columns
from .labels import DIRT_COLUMNS, with_dirt_columns
from .near_duplicates import max_jaccard

SHARD_COLUMNS = ["example_id", "shard", "domain", "text", "n_bytes", "source", "content_sha1", "doc_id", "offset",
                 *DIRT_COLUMNS]
TASK_COLUMNS = ["task", "split", "example_id", "domain", "doc_id", "text", "n_bytes", "content_sha1", *DIRT_COLUMNS]
SPLITS = ("dev", "test")


@dataclass(frozen=True)
class SplitReport:
    """What the split held out and what its near-duplicate guard did (figures of the returned tables)."""

    test_documents: int  # documents giving test examples, all domains together
    dev_documents: int
    max_jaccard_test_pool: float  # highest Jaccard similarity between any two examples of the two sets
    max_jaccard_test_dev: float
    max_jaccard_dev_pool: float
    pool_dropped: int  # pool candidates dropped by the guard (before the pool sample)
    dev_dropped: int  # dev examples dropped by the guard (near a test example)
    pool_exact_dropped: int  # pool candidates whose content equals a task example's

    def metrics(self) -> dict[str, float | int]:
        """The figures as stage metrics, each named `split.<field>`."""
        return {f"split.{name}": value for name, value in asdict(self).items()}


def split_pool_and_tasks(examples: pl.DataFrame, **settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (corpus_shards, task_sets): `split_and_report` without its report (same settings)."""
    corpus_shards, task_sets, _ = split_and_report(examples, **settings)
    return corpus_shards, task_sets


def split_and_report(
    examples: pl.DataFrame,
    *,
    task_examples_per_domain: int,
    pool_examples_per_domain: int | None,
    shard_size: int,
    seed: int,
    test_fraction: float = 0.5,
    split_margin: int = 8,
    near_duplicate_threshold: float = 0.5,
    target_domains: tuple[str, ...] = (),
) -> tuple[pl.DataFrame, pl.DataFrame, SplitReport]:
    """Split examples into a training pool (sharded) and one held-out task set per domain, by whole documents.

    Per domain, documents are put in reading order (order of first appearance; a document's
    examples by offset). The held-out documents are taken from the end: the last document(s)
    give `test` round(test_fraction × task_examples_per_domain) examples, the document(s) before
    them give `dev` the rest, and every earlier document goes to the pool, so a document belongs
    to exactly one of test, dev and pool. A held-out document gives one contiguous stretch of
    its examples that skips `split_margin` examples at each end (its unused examples are dropped,
    never pooled), so held-out text never sits next to text of another role when a domain is one
    long work cut into documents; a document of ≤ 2 × split_margin + 1 examples is used whole.

    The near-duplicate guard then compares across all domains (a mislabelled copy sits in
    another domain), by exact Jaccard similarity over 16-character shingles
    (`near_duplicates.max_jaccard`): dev examples with similarity ≥ `near_duplicate_threshold`
    to a test example are dropped, and so is every pool candidate whose content equals a task
    example's or whose similarity to a test or a kept dev example reaches the threshold.
    Only then is the pool sampled (so it keeps its size): at most `pool_examples_per_domain`
    (None = all) of a domain's candidates, by numpy default_rng seeded with (seed, domain), sorted
    by example_id and cut into shards "<domain>-<i:04d>" of `shard_size` rows; `target_domains` give
    task sets only. The task sets do not depend on the seed. Only the curation test reads `test`.

    Returns (corpus_shards, task_sets, report):
      corpus_shards: example_id, shard, domain, text, n_bytes, source, content_sha1,
                     doc_id, offset, dirt, dirt_source; sorted by (domain, shard, example_id).
      task_sets:     task (= domain), split ("dev"/"test"), example_id, domain, doc_id, text,
                     n_bytes, content_sha1, dirt, dirt_source; sorted by (task, example_id).
      report:        `SplitReport`, the figures of these two tables.
    dirt and dirt_source (optional labels, null when `examples` has none) are carried, never read.
    """
    _check_split_settings(task_examples_per_domain, pool_examples_per_domain, shard_size, seed, test_fraction,
                          split_margin, near_duplicate_threshold)
    ordered = _reading_order(examples)
    n_test = min(task_examples_per_domain - 1, max(1, round(test_fraction * task_examples_per_domain)))
    held_out = [_hold_out_documents(group, n_test, task_examples_per_domain - n_test, split_margin)
                for group in ordered.partition_by("domain", maintain_order=True)]
    test, dev, candidates = (pl.concat(part) for part in zip(*held_out))
    dev, candidates, dropped = _near_duplicate_guard(test, dev, candidates, near_duplicate_threshold)
    pools = [_sample_pool(group, domain, pool_examples_per_domain, shard_size, seed)
             for domain, group in _by_domain(candidates, _training(ordered, target_domains))]
    corpus_shards = (pl.concat(pools).select(SHARD_COLUMNS)
                     .cast({"example_id": pl.Int64, "n_bytes": pl.Int64, "offset": pl.Int64})
                     .sort("domain", "shard", "example_id"))
    task_sets = (pl.concat([test.with_columns(split=pl.lit("test")), dev.with_columns(split=pl.lit("dev"))])
                 .with_columns(task=pl.col("domain")).select(TASK_COLUMNS)
                 .cast({"example_id": pl.Int64, "n_bytes": pl.Int64}).sort("task", "example_id"))
    documents = {f"{name}_documents": frame.select("domain", "doc_id").n_unique()
                 for name, frame in (("test", test), ("dev", dev))}
    return corpus_shards, task_sets, SplitReport(**documents, **_max_jaccards(test, dev, corpus_shards), **dropped)


def _check_split_settings(task_examples_per_domain: int, pool_examples_per_domain: int | None, shard_size: int,
                          seed: int, test_fraction: float, split_margin: int, threshold: float) -> None:
    if not 0 < test_fraction < 1 or split_margin < 0:
        raise CorpusError(f"corpus.test_fraction must be in (0, 1) and corpus.split_margin >= 0, got "
                          f"{test_fraction} and {split_margin}.")
    if not 0 < threshold <= 1:
        raise CorpusError(f"corpus.near_duplicate_threshold must be in (0, 1], got {threshold}.")
    if task_examples_per_domain < 2:
        raise CorpusError(f"task_examples_per_domain must be >= 2 (a dev and a test example), "
                          f"got {task_examples_per_domain}.")
    if pool_examples_per_domain is not None and pool_examples_per_domain < 1:
        raise CorpusError(f"pool_examples_per_domain must be >= 1 or None (all), got {pool_examples_per_domain}.")
    if shard_size < 1:
        raise CorpusError(f"shard_size must be >= 1, got {shard_size}.")
    if seed < 0:
        raise CorpusError(f"seed must be >= 0 (numpy default_rng), got {seed}.")


def _reading_order(examples: pl.DataFrame) -> pl.DataFrame:
    """The examples (label columns added) by domain, documents in order of first appearance, then offset."""
    require_columns(examples, tuple(c for c in SHARD_COLUMNS if c != "shard" and c not in DIRT_COLUMNS), "examples")
    examples = with_dirt_columns(examples)
    if examples.height == 0:
        raise CorpusError("no examples to split: the documents produced no examples. "
                          "Add text, or lower example_bytes.")
    return (examples.with_row_index("_row")
            .with_columns(_doc_rank=pl.col("_row").min().over("domain", "doc_id"))
            .sort("domain", "_doc_rank", "offset", maintain_order=True)
            .drop("_row", "_doc_rank"))


def _hold_out_documents(group: pl.DataFrame, n_test: int, n_dev: int,
                        margin: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return (test rows, dev rows, pool candidate rows) of one domain's examples in reading order."""
    documents = group.partition_by("doc_id", maintain_order=True)
    taken: dict[str, list[pl.DataFrame]] = {"test": [], "dev": []}
    left = len(documents)  # documents[:left] are not held out
    for split, need in (("test", n_test), ("dev", n_dev)):
        while need > 0 and left > 1:  # the first document always stays in the pool
            left -= 1
            stretch = _held_out_stretch(documents[left], margin).head(need)
            taken[split].append(stretch)
            need -= stretch.height
        if need > 0:
            raise CorpusError(
                f"domain {group['domain'][0]!r} has {len(documents)} documents: too few to hold out whole "
                f"documents giving {n_test} test and {n_dev} dev examples (each document without "
                f"corpus.split_margin = {margin} examples at either end) and keep at least one document for the "
                "pool. Lower corpus.task_examples_per_domain or corpus.split_margin, or add documents to this "
                "domain.")
    return pl.concat(taken["test"][::-1]), pl.concat(taken["dev"][::-1]), pl.concat(documents[:left])


def _held_out_stretch(document: pl.DataFrame, margin: int) -> pl.DataFrame:
    """The examples a held-out document may give, in reading order."""
    if document.height <= 2 * margin + 1:
        # skipping the margins would leave at most one example: a document this short (a short page, or a
        # one-example record such as an image) is a record of its own, not a part of a long work whose
        # neighbouring parts may go to other roles, so no margin is skipped
        return document
    return document.slice(margin, document.height - 2 * margin)


def _near_duplicate_guard(test: pl.DataFrame, dev: pl.DataFrame, candidates: pl.DataFrame,
                          threshold: float) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Return (kept dev rows, kept pool candidates, counts dropped) after dropping near-duplicates of
    held-out examples, in every domain: dev near test, pool candidates equal to or near test or dev."""
    dev_best, _ = max_jaccard(dev["text"].to_list(), test["text"].to_list())
    kept_dev = dev.filter(pl.Series(dev_best < threshold))
    emptied = sorted(set(dev["domain"]) - set(kept_dev["domain"]))
    if emptied:
        raise CorpusError(f"domain {emptied[0]!r} has no dev example left: each is a near-duplicate of a test example "
                          "(corpus.near_duplicate_threshold). Raise the threshold or add documents to this domain.")
    # an identical chunk in the pool would let the task be 'attributed' to a copy of itself
    distinct = candidates.filter(~pl.col("content_sha1").is_in(
        pl.concat([test["content_sha1"], kept_dev["content_sha1"]]).implode()))
    pool_best, _ = max_jaccard(distinct["text"].to_list(), test["text"].to_list() + kept_dev["text"].to_list())
    kept_pool = distinct.filter(pl.Series(pool_best < threshold))
    dropped = {"pool_dropped": distinct.height - kept_pool.height, "dev_dropped": dev.height - kept_dev.height,
               "pool_exact_dropped": candidates.height - distinct.height}
    return kept_dev, kept_pool, dropped


def _training(ordered: pl.DataFrame, target_domains: tuple[str, ...]) -> pl.DataFrame:
    """The examples of the domains that train (all but the target-only ones); an unknown target name, or
    no domain left to train on, is an error naming corpus.target_domains."""
    domains = sorted(ordered["domain"].unique().to_list())
    unknown = sorted(set(target_domains) - set(domains))
    if unknown:
        raise CorpusError(f"corpus.target_domains names {unknown}, which the corpus does not have; its domains "
                          f"are {domains}")
    if set(domains) <= set(target_domains):
        raise CorpusError("corpus.target_domains holds every domain of the corpus: nothing is left to train on")
    return ordered.filter(~pl.col("domain").is_in(list(target_domains)))


def _by_domain(candidates: pl.DataFrame, ordered: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
    """Each domain's kept pool candidates; a domain the guard emptied is an error naming it."""
    groups = {key[0]: group for key, group in candidates.group_by("domain", maintain_order=True)}
    out = []
    for domain in ordered["domain"].unique(maintain_order=True).to_list():
        if domain not in groups:
            raise CorpusError(f"domain {domain!r} has no pool example left: every one is a near-duplicate of a "
                              "held-out example. Raise corpus.near_duplicate_threshold or add documents.")
        out.append((domain, groups[domain]))
    return out


def _sample_pool(candidates: pl.DataFrame, domain: str, pool_examples: int | None, shard_size: int,
                 seed: int) -> pl.DataFrame:
    """One domain's pool: a seeded sample of its candidates, sorted by example_id, with shard names."""
    if pool_examples is not None and pool_examples < candidates.height:
        rng = np.random.default_rng([seed, _domain_key(domain)])
        candidates = candidates[np.sort(rng.choice(candidates.height, size=pool_examples, replace=False))]
    pool = candidates.sort("example_id")
    shard = pl.Series("shard", [f"{domain}-{i // shard_size:04d}" for i in range(pool.height)], pl.Utf8)
    return pool.with_columns(shard)


def _max_jaccards(test: pl.DataFrame, dev: pl.DataFrame, pool: pl.DataFrame) -> dict[str, float]:
    """The highest Jaccard similarity between any two examples of each pair of roles."""
    def highest(a: pl.DataFrame, b: pl.DataFrame) -> float:
        best, _ = max_jaccard(a["text"].to_list(), b["text"].to_list())
        return float(best.max()) if best.size else 0.0
    return {"max_jaccard_test_pool": highest(test, pool), "max_jaccard_test_dev": highest(test, dev),
            "max_jaccard_dev_pool": highest(dev, pool)}


def _domain_key(domain: str) -> int:
    """Return a stable 32-bit integer for `domain` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(domain.encode("utf-8")).digest()[:4], "big")

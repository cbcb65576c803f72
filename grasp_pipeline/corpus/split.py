"""`split_pool_and_tasks`: examples to a sharded training pool and one held-out task set per domain."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from .errors import CorpusError, require_columns
from .labels import DIRT_COLUMNS, with_dirt_columns

SHARD_COLUMNS = ["example_id", "shard", "domain", "text", "n_bytes", "source", "content_sha1", "doc_id", "offset",
                 *DIRT_COLUMNS]
TASK_COLUMNS = ["task", "split", "example_id", "domain", "text", "n_bytes", "content_sha1", *DIRT_COLUMNS]
SPLITS = ("dev", "test")


def split_pool_and_tasks(
    examples: pl.DataFrame,
    *,
    task_examples_per_domain: int,
    pool_examples_per_domain: int | None,
    shard_size: int,
    seed: int,
    test_fraction: float = 0.5,
    split_block: int = 8,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split examples into a training pool (sharded) and one held-out task set per domain.

    Per domain, examples are put in reading order (documents in order of first
    appearance, then offset).  The task set is the last `task_examples_per_domain`
    of them: a held-out stretch of text, so neighbouring chunks of a task example
    mostly stay out of the pool.  The pool is a random sample (numpy default_rng
    seeded with (seed, domain), so one domain's sample does not depend on which
    other domains exist) of at most `pool_examples_per_domain` (None = all) of the
    remaining examples, minus any whose content equals a task example's, sorted
    by example_id and cut into shards "<domain>-<i:04d>" of `shard_size` rows.

    Each task set is split into `dev` and `test` (column `split`): its examples, in reading
    order, form blocks of `split_block` consecutive examples, and a seeded permutation
    (seed, domain) sends round(test_fraction × blocks) of them to `test`, the rest to `dev`.
    Blocks keep neighbouring pieces of one passage on the same side, so test examples are
    not near-copies of dev ones. Everything that fits, chooses or selects reads `dev` only;
    `test` is scored once, by the curation test.

    Returns (corpus_shards, task_sets):
      corpus_shards: example_id, shard, domain, text, n_bytes, source, content_sha1,
                     doc_id, offset, dirt, dirt_source; sorted by (domain, shard, example_id).
      task_sets:     task (= domain), split ("dev"/"test"), example_id, domain, text, n_bytes,
                     content_sha1, dirt, dirt_source; sorted by (task, example_id).
    dirt and dirt_source are the examples' optional labels (null when `examples` has
    none), carried through and never read here.
    """
    _check_split_settings(task_examples_per_domain, pool_examples_per_domain, shard_size, seed, test_fraction,
                          split_block)
    require_columns(examples, tuple(c for c in SHARD_COLUMNS if c != "shard" and c not in DIRT_COLUMNS), "examples")
    examples = with_dirt_columns(examples)
    if examples.height == 0:
        raise CorpusError("no examples to split: the documents produced no examples. "
                          "Add text, or lower example_bytes.")
    ordered = (
        examples.with_row_index("_row")
        .with_columns(_doc_rank=pl.col("_row").min().over("domain", "doc_id"))
        .sort("domain", "_doc_rank", "offset", maintain_order=True)
    )
    pools, tasks = [], []
    for group in ordered.partition_by("domain", maintain_order=True):
        pool, task = _split_domain(group, task_examples_per_domain, pool_examples_per_domain, shard_size, seed)
        pools.append(pool)
        tasks.append(_dev_test_split(task, test_fraction, split_block, seed))
    corpus_shards = (pl.concat(pools).select(SHARD_COLUMNS)
                     .cast({"example_id": pl.Int64, "n_bytes": pl.Int64, "offset": pl.Int64})
                     .sort("domain", "shard", "example_id"))
    task_sets = (pl.concat(tasks).select(TASK_COLUMNS)
                 .cast({"example_id": pl.Int64, "n_bytes": pl.Int64})
                 .sort("task", "example_id"))
    return corpus_shards, task_sets


def _check_split_settings(task_examples_per_domain: int, pool_examples_per_domain: int | None, shard_size: int,
                          seed: int, test_fraction: float, split_block: int) -> None:
    if not 0 < test_fraction < 1 or split_block < 1:
        raise CorpusError(f"corpus.test_fraction must be in (0, 1) and corpus.split_block >= 1, got "
                          f"{test_fraction} and {split_block}.")
    if task_examples_per_domain < 1:
        raise CorpusError(f"task_examples_per_domain must be >= 1, got {task_examples_per_domain}.")
    if pool_examples_per_domain is not None and pool_examples_per_domain < 1:
        raise CorpusError(f"pool_examples_per_domain must be >= 1 or None (all), got {pool_examples_per_domain}.")
    if shard_size < 1:
        raise CorpusError(f"shard_size must be >= 1, got {shard_size}.")
    if seed < 0:
        raise CorpusError(f"seed must be >= 0 (numpy default_rng), got {seed}.")


def _split_domain(group: pl.DataFrame, n_task: int, pool_examples: int | None, shard_size: int,
                  seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return (sharded pool rows, task rows) of one domain's examples in reading order."""
    domain = group["domain"][0]
    need = n_task + max(8, n_task)
    if group.height < need:
        raise CorpusError(
            f"domain {domain!r} has {group.height} examples, but needs at least {need} "
            f"({n_task} held-out task examples + at least {max(8, n_task)} for the pool). "
            "Lower task_examples_per_domain or add more text to this domain.")
    task = group.tail(n_task)
    # an identical chunk in the pool would let the task be 'attributed' to a copy of itself
    rest = group.head(group.height - n_task).filter(~pl.col("content_sha1").is_in(task["content_sha1"].implode()))
    if pool_examples is not None and pool_examples < rest.height:
        rng = np.random.default_rng([seed, _domain_key(domain)])
        rest = rest[np.sort(rng.choice(rest.height, size=pool_examples, replace=False))]
    pool = rest.sort("example_id")
    shard = pl.Series("shard", [f"{domain}-{i // shard_size:04d}" for i in range(pool.height)], pl.Utf8)
    return pool.with_columns(shard), task.with_columns(task=pl.col("domain"))


def _dev_test_split(task: pl.DataFrame, test_fraction: float, block: int, seed: int) -> pl.DataFrame:
    """The task rows (in reading order) with `split`: seeded whole blocks of `block` rows go to test."""
    blocks = -(-task.height // block)
    if blocks < 2:
        raise CorpusError(f"task set {task['domain'][0]!r} has {task.height} examples: too few for a dev and a test "
                          f"block of corpus.split_block = {block}; raise task_examples_per_domain or "
                          "lower split_block.")
    n_test = min(blocks - 1, max(1, int(round(test_fraction * blocks))))
    rng = np.random.default_rng([seed, _domain_key(task["domain"][0]), 1])
    test_blocks = set(rng.permutation(blocks)[:n_test].tolist())
    split = ["test" if i // block in test_blocks else "dev" for i in range(task.height)]
    return task.with_columns(split=pl.Series("split", split, pl.Utf8))


def _domain_key(domain: str) -> int:
    """Return a stable 32-bit integer for `domain` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(domain.encode("utf-8")).digest()[:4], "big")

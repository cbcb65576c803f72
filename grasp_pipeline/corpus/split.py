"""`split_pool_and_tasks`: examples to a sharded training pool and one held-out task set per domain."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from .errors import CorpusError, require_columns
from .labels import DIRT_COLUMNS, with_dirt_columns


SHARD_COLUMNS = ["example_id", "shard", "domain", "text", "n_bytes", "source", "content_sha1", "doc_id", "offset",
                 *DIRT_COLUMNS]
TASK_COLUMNS = ["task", "example_id", "domain", "text", "n_bytes", "content_sha1", *DIRT_COLUMNS]


def split_pool_and_tasks(
    examples: pl.DataFrame,
    *,
    task_examples_per_domain: int,
    pool_examples_per_domain: int | None,
    shard_size: int,
    seed: int,
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

    Returns (corpus_shards, task_sets):
      corpus_shards: example_id, shard, domain, text, n_bytes, source, content_sha1,
                     doc_id, offset, dirt, dirt_source; sorted by (domain, shard, example_id).
      task_sets:     task (= domain), example_id, domain, text, n_bytes, content_sha1,
                     dirt, dirt_source; sorted by (task, example_id).
    dirt and dirt_source are the examples' optional labels (null when `examples` has
    none), carried through and never read here.
    """
    _check_split_settings(task_examples_per_domain, pool_examples_per_domain, shard_size, seed)
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
        tasks.append(task)
    corpus_shards = (pl.concat(pools).select(SHARD_COLUMNS)
                     .cast({"example_id": pl.Int64, "n_bytes": pl.Int64, "offset": pl.Int64})
                     .sort("domain", "shard", "example_id"))
    task_sets = (pl.concat(tasks).select(TASK_COLUMNS)
                 .cast({"example_id": pl.Int64, "n_bytes": pl.Int64})
                 .sort("task", "example_id"))
    return corpus_shards, task_sets


def _check_split_settings(task_examples_per_domain: int, pool_examples_per_domain: int | None, shard_size: int,
                          seed: int) -> None:
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


def _domain_key(domain: str) -> int:
    """Return a stable 32-bit integer for `domain` (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha1(domain.encode("utf-8")).digest()[:4], "big")

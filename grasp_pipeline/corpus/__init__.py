"""Corpus ingestion: load documents, cut them into byte-bounded examples, split pool/tasks.

Three steps, each a plain function on polars frames (no dagster here, so the
library is usable and testable on its own):

    documents, report = load_documents(path)          # files -> one row per document
    examples = cut_examples(documents, 128)            # documents -> <=128-byte examples
    shards, tasks = split_pool_and_tasks(examples, ...)  # examples -> training pool + held-out tasks

Input files are JSON lines (optionally gzipped), JSON arrays or Parquet, with
required fields `text` and `domain` and optional `id` (other names, nested keys, or the domain
from the path: `mapping.CorpusMapping`), `source` and labels `dirt` and
`dirt_source` (carried to the pool and task tables, read by no stage).  With no path, the
corpus embedded in the package (data/default_corpus.jsonl.gz, see
data/PROVENANCE.md) is used.  Bad input raises CorpusError, whose message names
the file, the row and the field, and says how to fix it.

Modules: `files` (which files a path means), `readers` (one file to rows), `documents`
(`load_documents`), `examples` (`cut_examples`), `split` (`split_pool_and_tasks`, `split_and_report`),
`near_duplicates` (`max_jaccard`, `near_duplicate_mask`: Jaccard over character shingles),
`mapping` (which fields or path give text, domain and id),
`labels` (the optional label columns), `dirt` and `boilerplate` (the embedded corpus's
labelled dirt, made by scripts/add_corpus_dirt.py).
"""

from .documents import DEFAULT_CORPUS, IngestReport, load_documents, with_targets
from .errors import CorpusError
from .examples import EXAMPLE_SCHEMA, cut_examples, example_id
from .files import SUPPORTED_SUFFIXES, CorpusFile
from .labels import DIRT_COLUMNS, DIRT_KINDS
from .limits import IngestLimits
from .mapping import CorpusMapping
from .near_duplicates import max_jaccard, near_duplicate_mask
from .readers import DOMAIN_CHARS_HELP, DOMAIN_PATTERN
from .split import SHARD_COLUMNS, TASK_COLUMNS, SplitReport, split_and_report, split_pool_and_tasks

__all__ = ["DEFAULT_CORPUS", "DIRT_COLUMNS", "DIRT_KINDS", "DOMAIN_CHARS_HELP", "DOMAIN_PATTERN", "EXAMPLE_SCHEMA",
           "SHARD_COLUMNS", "SUPPORTED_SUFFIXES", "TASK_COLUMNS", "CorpusError", "CorpusFile", "CorpusMapping",
           "IngestLimits", "IngestReport", "SplitReport", "cut_examples", "example_id", "load_documents", "max_jaccard",
           "near_duplicate_mask", "split_and_report", "split_pool_and_tasks", "with_targets"]

"""Hostile corpora: names, links, sizes and bombs are refused by name; nothing is read twice;
memory follows the document; corpora on object storage read like local ones.

Every refusal is checked twice: the CorpusError names the file (and line or row) and the
limit or link, and the corpus tables are exactly as they were (same versions).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from grasp_pipeline import stages
from grasp_pipeline.corpus import CorpusError, IngestLimits, load_documents

from .conftest import build_tables_until, tiny_params, write_user_corpus

REPO = Path(__file__).resolve().parents[1]
LINES = [{"id": f"d{i}", "domain": "news", "text": f"document number {i} " * 8} for i in range(4)]


def write_jsonl(path: Path, rows=LINES) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def corpus_store(tmp_path_factory):
    """A storage root holding corpus_shards and task_sets (the tiny config), built once."""
    return build_tables_until(tmp_path_factory.mktemp("hostile") / "root", "corpus_shards")


def refused_leaving_tables(store, corpus_path: str, pattern: str, **corpus) -> None:
    """Runs the corpus stage on `corpus_path`; it must raise CorpusError matching `pattern` and
    leave corpus_shards and task_sets at their versions."""
    before = {t: store.version(t) for t in ("corpus_shards", "task_sets")}
    params = tiny_params(corpus={"corpus_path": corpus_path, **corpus})
    with pytest.raises(CorpusError, match=pattern):
        stages.run_corpus_shards(store, params.corpus, params.workload.example_bytes)
    assert {t: store.version(t) for t in before} == before


# ------------------------------------------------------------------ names and links

def test_a_file_name_that_is_not_utf8_is_refused_by_name(corpus_store, tmp_path):
    folder = tmp_path / "corpus"
    write_jsonl(folder / "good.jsonl")
    bad = os.fsdecode(b"caf\xe9.jsonl")  # Latin-1 é: undecodable as UTF-8
    write_jsonl(folder / bad)
    refused_leaving_tables(corpus_store, str(folder), r"caf\\xe9\.jsonl: the file name is not valid UTF-8")


def test_a_symbolic_link_out_of_the_corpus_root_is_refused_naming_link_and_target(corpus_store, tmp_path):
    outside = write_jsonl(tmp_path / "private" / "secret.jsonl")
    folder = tmp_path / "corpus"
    write_jsonl(folder / "good.jsonl")
    (folder / "leak.jsonl").symlink_to(outside)
    refused_leaving_tables(corpus_store, str(folder),
                           rf"leak\.jsonl: a symbolic link to {outside}, outside the corpus root")


def test_a_linked_folder_out_of_the_corpus_root_is_refused(corpus_store, tmp_path):
    write_jsonl(tmp_path / "elsewhere" / "x.jsonl")
    folder = tmp_path / "corpus"
    write_jsonl(folder / "good.jsonl")
    (folder / "more").symlink_to(tmp_path / "elsewhere")
    refused_leaving_tables(corpus_store, str(folder), r"more: a symbolic link to .*elsewhere, outside the corpus root")


@pytest.mark.parametrize("form", ["directory", "glob"])
def test_a_link_loop_reads_every_file_once(tmp_path, form):
    folder = tmp_path / "corpus"
    write_jsonl(folder / "a" / "one.jsonl", LINES[:2])
    write_jsonl(folder / "two.jsonl", LINES[2:])
    (folder / "a" / "loop").symlink_to("..")  # a/loop/a/loop/… is the same folder again
    (folder / "again.jsonl").symlink_to("two.jsonl")  # a second name for a file
    documents, report = load_documents(folder if form == "directory" else f"{folder}/**/*.jsonl")
    assert report.documents == len(LINES)
    assert sorted(documents["doc_id"]) == [r["id"] for r in LINES]
    assert len(report.files) == 2


# ------------------------------------------------------------------ sizes and bombs

def test_a_line_longer_than_the_record_limit_is_refused_naming_file_and_line(corpus_store, tmp_path):
    rows = LINES[:2] + [{"id": "huge", "domain": "news", "text": "x" * 5000}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    refused_leaving_tables(corpus_store, str(path), r"c\.jsonl: line 3 is longer than corpus.max_record_bytes = 4096",
                           max_record_bytes=4096)


def test_a_parquet_row_longer_than_the_record_limit_is_refused_naming_file_and_row(corpus_store, tmp_path):
    path = tmp_path / "c.parquet"
    pl.DataFrame({"domain": ["news"] * 3, "text": ["short", "y" * 5000, "short"]}).write_parquet(path)
    refused_leaving_tables(corpus_store, str(path), r"c\.parquet: row 1: field 'text' is 5000 bytes, more than "
                                                    r"corpus.max_record_bytes = 4096", max_record_bytes=4096)


def test_a_file_larger_than_the_file_limit_is_refused(corpus_store, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl")
    refused_leaving_tables(corpus_store, str(path), rf"c\.jsonl: {path.stat().st_size} bytes, more than "
                                                    r"corpus.max_file_bytes = 100", max_file_bytes=100)


def test_a_decompression_bomb_is_refused_after_reading_a_sliver_of_it(corpus_store, tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    line = json.dumps({"domain": "news", "text": "a" * (1 << 20)}).encode() + b"\n"
    with gzip.open(path, "wb", compresslevel=9) as out:  # 512 MiB of text in well under 1 MiB
        for _ in range(512):
            out.write(line)
    assert path.stat().st_size < 1 << 20
    refused_leaving_tables(corpus_store, str(path), r"bomb\.jsonl\.gz: decompresses \d+× .*more than "
                                                    r"corpus.max_decompression_ratio = 200")


def test_a_gz_file_expanding_past_the_file_limit_is_refused(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in LINES).encode()))
    with pytest.raises(CorpusError, match=r"c\.jsonl\.gz: decompresses to more than corpus.max_file_bytes = 200"):
        load_documents(path, IngestLimits(max_file_bytes=200))


MEASURE = """
import json, resource, sys
from grasp_pipeline.corpus import cut_examples, load_documents
import polars, pyarrow  # imported before the baseline: their code is not the document's memory
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
examples = cut_examples(load_documents(sys.argv[1])[0], 128)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"increase_bytes": (peak - base) * 1024, "examples": examples.height}))
"""


def test_a_20_mb_document_is_ingested_in_memory_proportional_to_it(tmp_path):
    """Peak RSS of load + cut for one 20 MiB document (mixed 1- and 3-byte characters), measured in a
    fresh process: at most 10 times the document (the reader held it as a whole file, a str and 24
    bytes of index arrays per byte: 495 MiB, 25 times, before)."""
    unit = "漢字とかなabc " * 10
    text = unit * (20 * 2**20 // len(unit.encode()))
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": "big", "domain": "d", "text": text}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    size = len(text.encode())
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "POLARS_MAX_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout)
    assert measured["examples"] >= size // 128
    assert measured["increase_bytes"] <= 10 * size, (
        f"{measured['increase_bytes'] / 2**20:.0f} MiB for a 20 MiB document")


# ------------------------------------------------------------------ corpora on object storage

@pytest.fixture
def s3_corpus(s3_root, tmp_path) -> str:
    """Two Parquet files, a .jsonl.gz and a stray .txt under s3://<bucket>/corpus/, made from real text."""
    import boto3

    local = write_user_corpus(tmp_path / "user.jsonl", docs_per_domain=4)
    rows = [json.loads(line) for line in local.read_text().splitlines()]
    bucket = s3_root[len("s3://"):].split("/")[0]
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    for name, part in (("a.parquet", rows[0::3]), ("b/b.parquet", rows[1::3])):
        target = tmp_path / name.replace("/", "_")
        pl.DataFrame(part).write_parquet(target)
        client.upload_file(str(target), bucket, f"corpus/{name}")
    gz = gzip.compress("".join(json.dumps(r) + "\n" for r in rows[2::3]).encode())
    client.put_object(Bucket=bucket, Key="corpus/c.jsonl.gz", Body=gz)
    client.put_object(Bucket=bucket, Key="corpus/notes.txt", Body=b"not a corpus file")
    return f"s3://{bucket}/corpus"


def test_an_object_store_glob_reads_parquet_and_jsonl_like_local_files(s3_corpus, tmp_path):
    documents, report = load_documents(f"{s3_corpus}/**/*")
    local, _ = load_documents(write_user_corpus(tmp_path / "same.jsonl", docs_per_domain=4))
    assert report.files == tuple(f"{s3_corpus}/{n}" for n in ("a.parquet", "b/b.parquet", "c.jsonl.gz"))
    assert sorted(documents["doc_id"]) == sorted(local["doc_id"])
    assert sorted(documents["text"]) == sorted(local["text"])
    only_parquet, _ = load_documents(f"{s3_corpus}/*.parquet")
    assert set(only_parquet["source"]) == {"a.parquet"}


def test_the_corpus_stage_reads_an_object_store_corpus_into_object_store_tables(s3_corpus, s3_root):
    from grasp_pipeline.infra.storage import DeltaStore

    store = DeltaStore(s3_root)
    params = tiny_params(corpus={"corpus_path": f"{s3_corpus}/**/*"})
    stages.run_corpus_shards(store, params.corpus, params.workload.example_bytes)
    assert set(store.read("corpus_shards")["domain"]) == {"news", "code", "poetry"}


def test_an_object_store_glob_matching_nothing_names_the_location(s3_corpus):
    with pytest.raises(CorpusError, match=r"corpus location 's3://.*/corpus/\*\.jsonl' matches no .* objects"):
        load_documents(f"{s3_corpus}/*.jsonl")

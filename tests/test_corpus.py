"""Tests for grasp_pipeline.corpus: real files in tmp_path, no mocks."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grasp_pipeline.corpus import (
    DEFAULT_CORPUS,
    CorpusError,
    cut_examples,
    load_documents,
    split_pool_and_tasks,
)

# -----------------------------------------------------------------------------
# helpers


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def prose(domain: str, n_words: int, seed: int = 0) -> str:
    """Return distinct-looking filler text of roughly 6 * n_words bytes."""
    return " ".join(f"{domain}{(i * 7919 + seed) % 10007}" for i in range(n_words))


def docs_frame(texts: list[str], domain: str = "d") -> pl.DataFrame:
    return pl.DataFrame({
        "doc_id": [f"doc{i}" for i in range(len(texts))],
        "domain": [domain] * len(texts),
        "source": ["test"] * len(texts),
        "text": texts,
    })


def split(examples: pl.DataFrame, seed: int = 0, pool: int | None = 50):
    return split_pool_and_tasks(examples, task_examples_per_domain=16, pool_examples_per_domain=pool,
                                shard_size=20, seed=seed)


@pytest.fixture(scope="module")
def default_examples() -> pl.DataFrame:
    docs, _ = load_documents()
    return cut_examples(docs, 128)


# -----------------------------------------------------------------------------
# embedded corpus


def test_embedded_corpus_has_five_domains_each_big_enough_for_64_tasks_and_400_pool(default_examples):
    shards, tasks = split_pool_and_tasks(default_examples, task_examples_per_domain=64,
                                         pool_examples_per_domain=400, shard_size=100, seed=0)
    domains = sorted(default_examples["domain"].unique())
    assert len(domains) >= 5
    assert shards.group_by("domain").len().sort("domain")["len"].to_list() == [400] * len(domains)
    assert tasks.group_by("task").len().sort("task")["len"].to_list() == [64] * len(domains)


def test_embedded_corpus_report_counts_documents_per_domain():
    docs, report = load_documents(None)
    assert report.files == (str(DEFAULT_CORPUS),)
    assert report.documents == docs.height == sum(report.domains.values())
    assert report.replaced_bytes == 0
    assert docs.columns == ["doc_id", "domain", "source", "text", "dirt", "dirt_source"]
    assert docs["doc_id"].is_unique().all()


def test_embedded_corpus_records_name_their_source_and_licence():
    with gzip.open(DEFAULT_CORPUS, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    for r in records:
        assert set(r) == {"id", "domain", "source", "license", "text", "dirt", "dirt_source"}
        assert r["source"] and r["license"] in {"public-domain", "PSF-2.0"}
    literature = "".join(r["text"] for r in records if r["license"] == "public-domain")
    assert "gutenberg" not in literature.lower()  # PG header/footer boilerplate stripped


# -----------------------------------------------------------------------------
# cut_examples


def test_cut_never_exceeds_example_bytes_and_round_trips_utf8(default_examples):
    docs, _ = load_documents()
    doc_bytes = {d: t.encode("utf-8") for d, t in docs.select("doc_id", "text").iter_rows()}
    assert default_examples["n_bytes"].max() <= 128
    assert default_examples["n_bytes"].min() >= 64
    for doc_id, offset, text, n, sha in default_examples.select(
            "doc_id", "offset", "text", "n_bytes", "content_sha1").iter_rows():
        piece = text.encode("utf-8")
        assert len(piece) == n and doc_bytes[doc_id][offset:offset + n] == piece
        assert hashlib.sha1(piece).hexdigest() == sha


def test_cut_stops_at_last_character_boundary_below_limit():
    # 3-byte characters: 42 of them fill 126 bytes, the 43rd would cross 128
    ex = cut_examples(docs_frame(["語" * 100]), example_bytes=128)
    assert ex["n_bytes"].to_list() == [126, 126]
    assert ex["offset"].to_list() == [0, 126]  # the 48-byte tail (< 64) is dropped


def test_cut_drops_whitespace_only_pieces_but_keeps_chunk_numbering():
    text = "a" * 16 + " " * 16 + "b" * 16
    ex = cut_examples(docs_frame([text]), example_bytes=16)
    assert ex["text"].to_list() == ["a" * 16, "b" * 16]
    assert ex["offset"].to_list() == [0, 32]
    again = cut_examples(docs_frame(["a" * 16 + "x" * 16 + "b" * 16]), example_bytes=16)
    assert again["example_id"][2] == ex["example_id"][1]  # same chunk index -> same id


def test_cut_rejects_example_bytes_below_one_character():
    with pytest.raises(CorpusError, match="example_bytes"):
        cut_examples(docs_frame(["abc"]), example_bytes=3)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=400), limit=st.integers(min_value=4, max_value=64))
def test_cut_property_examples_bounded_ordered_and_exact_slices(text, limit):
    data = text.encode("utf-8")
    ex = cut_examples(docs_frame([text]), example_bytes=limit)
    end = 0
    for offset, piece, n in ex.select("offset", "text", "n_bytes").iter_rows():
        assert n <= limit and n >= limit // 2
        assert offset >= end  # non-overlapping, in document order
        assert data[offset:offset + n] == piece.encode("utf-8")
        assert not piece.isspace()
        end = offset + n
    if limit >= 5 and not any(c.isspace() for c in text):
        # no whitespace pieces, and a greedy cut keeps >= limit - 3 >= limit // 2 bytes, so
        # the examples tile the document from byte 0 and only a short tail may be missing
        offsets, sizes = ex["offset"].to_list(), ex["n_bytes"].to_list()
        assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
        assert all(n > limit - 4 for n in sizes[:-1])
        assert len(data) - end < limit // 2


# -----------------------------------------------------------------------------
# input formats


def test_loads_jsonl_parquet_json_and_gz_from_a_directory_recursively(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a1", "domain": "x", "text": "alpha"},
                                       {"domain": "x", "text": "beta"}])
    (tmp_path / "sub").mkdir()
    pl.DataFrame({"text": ["gamma"], "domain": ["y"]}).write_parquet(tmp_path / "sub" / "b.parquet")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(b'{"domain": "y", "text": "delta", "id": 7}\n'))
    (tmp_path / "d.json").write_text(json.dumps([{"domain": "z", "text": "eps", "source": "own"}]))
    (tmp_path / "notes.txt").write_text("ignored")

    docs, report = load_documents(tmp_path)
    assert docs.select("dirt", "dirt_source").null_count().row(0) == (5, 5)  # no labels: null, not required
    assert docs.drop("dirt", "dirt_source").to_dicts() == [
        {"doc_id": "a1", "domain": "x", "source": "a.jsonl", "text": "alpha"},
        {"doc_id": "a.jsonl:2", "domain": "x", "source": "a.jsonl", "text": "beta"},
        {"doc_id": "7", "domain": "y", "source": "c.jsonl.gz", "text": "delta"},
        {"doc_id": "d.json:1", "domain": "z", "source": "own", "text": "eps"},
        {"doc_id": "sub/b.parquet:0", "domain": "y", "source": "sub/b.parquet", "text": "gamma"},
    ]
    assert report.domains == {"x": 2, "y": 2, "z": 1}
    assert len(report.files) == 4


def test_loads_a_glob_with_sources_relative_to_its_fixed_prefix(tmp_path):
    write_jsonl(tmp_path / "p" / "one.jsonl", [{"domain": "x", "text": "1"}])
    write_jsonl(tmp_path / "p" / "two.jsonl", [{"domain": "x", "text": "2"}])
    write_jsonl(tmp_path / "p" / "skip.json", [{"domain": "x", "text": "3"}])
    docs, report = load_documents(str(tmp_path / "p" / "*.jsonl"))
    assert docs["source"].to_list() == ["one.jsonl", "two.jsonl"]
    assert report.documents == 2


def test_undecodable_jsonl_bytes_are_replaced_and_counted(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"domain": "x", "text": "ok \xff\xfe here"}\n{"domain": "x", "text": "caf\xc3"}\n')
    docs, report = load_documents(f)
    assert report.replaced_bytes == 3
    assert docs["text"].to_list() == ["ok \ufffd\ufffd here", "caf\ufffd"]


def test_undecodable_parquet_binary_text_is_replaced_and_counted(tmp_path):
    f = tmp_path / "bin.parquet"
    pl.DataFrame({"text": pl.Series([b"fine", b"bro\xffken"], dtype=pl.Binary),
                  "domain": ["x", "x"]}).write_parquet(f)
    docs, report = load_documents(f)
    assert report.replaced_bytes == 1
    assert docs["text"].to_list() == ["fine", "bro\ufffdken"]


def test_example_ids_stable_when_another_file_is_added(tmp_path):
    write_jsonl(tmp_path / "b.jsonl", [{"domain": "x", "text": prose("x", 200)}])
    before = cut_examples(load_documents(tmp_path)[0])
    write_jsonl(tmp_path / "a.jsonl", [{"domain": "x", "text": prose("x", 200, seed=1)}])
    after = cut_examples(load_documents(tmp_path)[0])
    assert after.height > before.height
    kept = after.filter(pl.col("source") == "b.jsonl")
    assert kept["example_id"].to_list() == before["example_id"].to_list()


# -----------------------------------------------------------------------------
# bad input: each error names what and where, and says how to fix it


def test_missing_text_field_names_file_line_and_field(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"domain": "x", "text": "a"}, {"domain": "x", "body": "b"}])
    with pytest.raises(CorpusError, match=r"m\.jsonl: line 2: missing required field 'text'"):
        load_documents(f)


def test_missing_domain_column_in_parquet_names_file_and_column(tmp_path):
    f = tmp_path / "nodomain.parquet"
    pl.DataFrame({"text": ["a"]}).write_parquet(f)
    with pytest.raises(CorpusError, match=r"nodomain\.parquet: missing required column 'domain'"):
        load_documents(f)


def test_empty_file_raises(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    with pytest.raises(CorpusError, match=r"empty\.jsonl.*empty"):
        load_documents(f)


def test_empty_directory_raises(tmp_path):
    with pytest.raises(CorpusError, match=r"contains no \*\.jsonl"):
        load_documents(tmp_path)


def test_path_that_matches_nothing_raises(tmp_path):
    with pytest.raises(CorpusError, match="matches nothing"):
        load_documents(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="matches no"):
        load_documents(str(tmp_path / "*.parquet"))


def test_corrupt_parquet_raises_naming_the_file(tmp_path):
    f = tmp_path / "broken.parquet"
    f.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(CorpusError, match=r"broken\.parquet: cannot read as Parquet"):
        load_documents(f)


def test_corrupt_gzip_raises_naming_the_file(tmp_path):
    f = tmp_path / "broken.jsonl.gz"
    f.write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(CorpusError, match=r"broken\.jsonl\.gz: cannot decompress"):
        load_documents(f)


def test_invalid_json_line_names_line_number(tmp_path):
    f = tmp_path / "j.jsonl"
    f.write_text('{"domain": "x", "text": "a"}\n\n{"domain": "x", "text": oops}\n')
    with pytest.raises(CorpusError, match=r"j\.jsonl: line 3 is not valid JSON"):
        load_documents(f)


def test_bad_domain_name_names_row_and_allowed_characters(tmp_path):
    f = tmp_path / "dom.parquet"
    pl.DataFrame({"text": ["a", "b"], "domain": ["ok", "has space"]}).write_parquet(f)
    with pytest.raises(CorpusError, match=r"dom\.parquet: row 1: field 'domain' is 'has space'.*A-Z a-z, digits"):
        load_documents(f)


def test_null_domain_names_row_and_field(tmp_path):
    f = write_jsonl(tmp_path / "n.jsonl", [{"domain": None, "text": "a"}])
    with pytest.raises(CorpusError, match=r"n\.jsonl: line 1: field 'domain' is null or empty"):
        load_documents(f)


def test_non_string_text_names_row_and_field(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"domain": "x", "text": "a"}, {"domain": "x", "text": 5}])
    with pytest.raises(CorpusError, match=r"t\.jsonl: line 2: field 'text' must be a string"):
        load_documents(f)
    p = tmp_path / "t.parquet"
    pl.DataFrame({"domain": ["x"], "text": [1.5]}).write_parquet(p)
    with pytest.raises(CorpusError, match=r"t\.parquet: row 0: column 'text' must hold strings"):
        load_documents(p)


def test_duplicate_ids_name_both_locations(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "same", "domain": "x", "text": "1"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "other", "domain": "x", "text": "2"},
                                       {"id": "same", "domain": "y", "text": "3"}])
    with pytest.raises(CorpusError, match=r"duplicate document id 'same': .*a\.jsonl line 1 and .*b\.jsonl line 2"):
        load_documents(tmp_path)


def test_domain_too_small_names_domain_count_and_need(tmp_path):
    big = docs_frame([prose("big", 800, seed=s) for s in range(3)], "big")
    tiny = docs_frame([prose("tiny", 800, seed=s) for s in range(2)], "tiny")
    examples = cut_examples(pl.concat([big, tiny]), 64)
    # two long documents: test and dev fill, but no document is left for the pool
    with pytest.raises(CorpusError, match=r"domain 'tiny' has 2 documents: too few .* 8 test and 8 dev examples"
                                          r".*corpus\.task_examples_per_domain or corpus\.split_margin"):
        split(examples)


# -----------------------------------------------------------------------------
# split_pool_and_tasks


@pytest.fixture(scope="module")
def two_domain_examples() -> pl.DataFrame:
    docs = pl.concat([
        docs_frame([prose("a", 800, seed=s) for s in range(3)], "alpha"),
        docs_frame([prose("b", 800, seed=s) for s in range(3)], "beta"),
    ])
    return cut_examples(docs, 64)


def test_split_is_deterministic_for_a_seed(two_domain_examples):
    first, second = split(two_domain_examples, seed=3), split(two_domain_examples, seed=3)
    assert first[0].equals(second[0]) and first[1].equals(second[1])
    other = split(two_domain_examples, seed=4)
    assert not other[0].equals(first[0])  # the pool sample depends on the seed
    assert other[1].equals(first[1])  # the held-out task region does not


def test_split_holds_out_a_stretch_inside_the_last_documents_of_each_domain(two_domain_examples):
    shards, tasks = split(two_domain_examples, pool=None)
    margin = 8  # split_margin's default
    for (domain,), group in two_domain_examples.group_by("domain"):
        documents = group.partition_by("doc_id", maintain_order=True)  # cut order = reading order here
        for split_name, document in (("test", documents[-1]), ("dev", documents[-2])):
            expected = sorted(document["example_id"][margin:margin + 8].to_list())
            held = tasks.filter((pl.col("task") == domain) & (pl.col("split") == split_name))
            assert held["example_id"].to_list() == expected and set(held["doc_id"]) == {document["doc_id"][0]}
        pool = shards.filter(pl.col("domain") == domain)
        assert set(pool["doc_id"]) == {d["doc_id"][0] for d in documents[:-2]}  # unused held-out pieces: nowhere
    assert set(shards["example_id"]).isdisjoint(tasks["example_id"])


def test_split_output_columns_sorting_and_shards(two_domain_examples):
    shards, tasks = split(two_domain_examples)
    assert shards.columns == ["example_id", "shard", "domain", "text", "n_bytes", "source",
                              "content_sha1", "doc_id", "offset", "dirt", "dirt_source"]
    assert tasks.columns == ["task", "split", "example_id", "domain", "doc_id", "text", "n_bytes", "content_sha1",
                             "dirt", "dirt_source"]
    assert shards.schema["example_id"] == pl.Int64 and shards.schema["offset"] == pl.Int64
    assert shards.equals(shards.sort("domain", "shard", "example_id"))
    assert tasks.equals(tasks.sort("task", "example_id"))
    alpha = shards.filter(pl.col("domain") == "alpha")
    assert alpha.height == 50
    assert alpha["shard"].to_list() == ["alpha-0000"] * 20 + ["alpha-0001"] * 20 + ["alpha-0002"] * 10
    assert alpha["example_id"].is_sorted()


def test_a_domain_whose_dev_examples_all_nearly_copy_its_test_examples_is_named(two_domain_examples):
    # beta's dev document replaced by a copy of its test document: every dev piece is a test piece
    beta = two_domain_examples.filter(pl.col("domain") == "beta")
    last, dev_id = beta["doc_id"][-1], beta["doc_id"].unique(maintain_order=True)[-2]
    copy = beta.filter(pl.col("doc_id") == last).with_columns(doc_id=pl.lit(dev_id))
    examples = pl.concat([two_domain_examples.filter((pl.col("domain") != "beta") | (pl.col("doc_id") != dev_id)),
                          copy])
    with pytest.raises(CorpusError, match=r"domain 'beta' has no dev example left"):
        split(examples)

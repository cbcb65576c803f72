"""The embedded corpus's labelled dirt (corpus/dirt.py) and how ingestion carries the labels."""

from __future__ import annotations

import difflib
import json

import polars as pl
import pytest

from grasp_pipeline.corpus import DEFAULT_CORPUS, CorpusError, cut_examples, load_documents, split_pool_and_tasks
from grasp_pipeline.corpus.dirt import DIRT_SHARES, SOURCE_FRACTION, add_dirt, corpus_bytes, read_records, strip_dirt
from grasp_pipeline.corpus.labels import CLEAN


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return read_records(DEFAULT_CORPUS.read_bytes())


@pytest.fixture(scope="module")
def examples() -> pl.DataFrame:
    return cut_examples(load_documents(None)[0], 128)


@pytest.fixture(scope="module")
def clean_examples(examples) -> pl.DataFrame:
    """Clean examples with their position in their domain's reading order (0 = first, 1 = last)."""
    clean = examples.filter(pl.col("dirt") == CLEAN)
    return clean.with_columns(position=pl.int_range(pl.len()).over("domain") / pl.len().over("domain"))


def dirt_with_source(examples, clean_examples, kind) -> pl.DataFrame:
    """Dirt examples of `kind` joined to the clean example each was made from (src_*)."""
    source = clean_examples.select(dirt_source=pl.col("example_id").cast(pl.Utf8), src_text="text",
                                   src_domain="domain", src_position="position")
    return examples.filter(pl.col("dirt") == kind).join(source, on="dirt_source", how="left")


# -----------------------------------------------------------------------------
# the shipped file


def test_shipped_corpus_is_add_dirt_of_its_own_clean_documents_byte_for_byte(shipped):
    # deterministic and idempotent in one: stripping the dirt and adding it again rebuilds the file
    assert corpus_bytes(add_dirt(shipped)) == DEFAULT_CORPUS.read_bytes()


def test_strip_dirt_returns_the_clean_documents_unlabelled_and_in_order(shipped):
    clean = strip_dirt(shipped)
    assert [r["id"] for r in clean] == [r["id"] for r in shipped if r["dirt"] == CLEAN]
    assert all(list(r) == ["id", "domain", "source", "license", "text"] for r in clean)
    assert add_dirt(clean) == shipped


def test_another_seed_gives_other_dirt(shipped):
    other = add_dirt(shipped, seed=1)
    assert [r["text"] for r in other if r["dirt"] != CLEAN] != [r["text"] for r in shipped if r["dirt"] != CLEAN]


def test_every_dirt_document_is_exactly_one_whole_example(shipped, examples):
    dirt = {r["id"]: r["text"] for r in shipped if r["dirt"] != CLEAN}
    cut = examples.filter(pl.col("dirt") != CLEAN)
    assert cut.height == len(dirt)
    assert dict(zip(cut["doc_id"], cut["text"])) == dirt
    assert cut["n_bytes"].min() >= 100 and cut["n_bytes"].max() <= 128


def test_each_domain_has_the_documented_share_of_each_kind(examples):
    for domain, group in examples.group_by("domain"):
        for kind, share in DIRT_SHARES.items():
            assert (group["dirt"] == kind).mean() == pytest.approx(share, abs=0.002), (domain, kind)


def test_dirt_documents_come_before_each_domains_clean_documents(shipped):
    for domain in {r["domain"] for r in shipped}:
        kinds = [r["dirt"] for r in shipped if r["domain"] == domain]
        first_clean = kinds.index(CLEAN)
        assert CLEAN not in kinds[:first_clean] and set(kinds[first_clean:]) == {CLEAN}, domain


def test_no_task_example_is_dirt_and_no_pool_dirt_copies_a_task(examples, clean_examples):
    pool, tasks = split_pool_and_tasks(examples, task_examples_per_domain=64, pool_examples_per_domain=400,
                                       shard_size=256, seed=0)
    assert set(tasks["dirt"]) == {CLEAN}
    # dirt is made only from the first SOURCE_FRACTION of each domain's clean text
    made_from = pool.filter(pl.col("dirt") != CLEAN).join(
        clean_examples.select(dirt_source=pl.col("example_id").cast(pl.Utf8), position="position"),
        on="dirt_source", how="inner")
    assert made_from.height > 0 and made_from["position"].max() < SOURCE_FRACTION
    assert set(pool["content_sha1"]).isdisjoint(tasks["content_sha1"])


def test_exact_duplicates_copy_a_clean_example_of_their_domain_in_clusters(examples, clean_examples):
    dups = dirt_with_source(examples, clean_examples, "exact_duplicate")
    assert (dups["text"] == dups["src_text"]).all() and (dups["domain"] == dups["src_domain"]).all()
    sizes = dups.group_by("dirt_source").len()["len"]
    assert sizes.min() == 1 and sizes.max() >= 5


def test_near_duplicates_differ_from_their_source_by_a_few_characters(examples, clean_examples):
    near = dirt_with_source(examples, clean_examples, "near_duplicate")
    assert near["src_text"].null_count() == 0 and (near["text"] != near["src_text"]).all()
    for text, src in near.select("text", "src_text").head(300).iter_rows():
        # up to 4 edits, plus characters pushed past the 128-byte end by insertions
        assert difflib.SequenceMatcher(None, text, src, autojunk=False).ratio() > 0.9


def test_garbled_examples_shuffle_their_sources_characters(examples, clean_examples):
    garbled = dirt_with_source(examples, clean_examples, "garbled")
    assert (garbled["text"] != garbled["src_text"]).all()
    assert all(sorted(a) == sorted(b) for a, b in garbled.select("text", "src_text").iter_rows())


def test_mislabelled_examples_are_clean_examples_of_another_domain(examples, clean_examples):
    wrong = dirt_with_source(examples, clean_examples, "mislabelled")
    assert (wrong["text"] == wrong["src_text"]).all() and (wrong["domain"] != wrong["src_domain"]).all()


def test_boilerplate_comes_from_its_domain_familys_templates_with_variants(examples):
    boiler = examples.filter(pl.col("dirt") == "boilerplate")
    family = boiler["dirt_source"].str.extract(r"^boilerplate:([a-z_]+)/")
    expected = boiler["domain"].replace_strict({"python_docs": "python_docs", "python_source": "python_source"},
                                               default="literature")
    assert (family == expected).all()
    per_template = boiler.group_by("dirt_source").agg(variants=pl.col("text").n_unique(), copies=pl.len())
    assert (per_template["variants"] > 1).all()  # slots vary: near-identical, not all identical
    assert "gutenberg" not in " ".join(boiler["text"]).lower()


# -----------------------------------------------------------------------------
# labels through ingestion


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def long_text(word: str) -> str:
    return " ".join(f"{word}{i}" for i in range(800))  # ~60 examples


def test_labels_reach_pool_and_task_rows_from_jsonl_and_parquet(tmp_path):
    rows = [{"id": f"d{i}", "domain": "x", "text": long_text(f"w{i}-"), "dirt": kind, "dirt_source": src}
            for i, (kind, src) in enumerate([("garbled", "s1"), ("clean", None), ("clean", None)])]
    write(tmp_path / "a.jsonl", rows)
    pl.DataFrame([{**r, "id": f"p{r['id']}"} for r in rows]).write_parquet(tmp_path / "b.parquet")
    docs, _ = load_documents(tmp_path)
    labels = dict(zip(docs["doc_id"], zip(docs["dirt"], docs["dirt_source"])))
    assert labels["d0"] == labels["pd0"] == ("garbled", "s1") and labels["d1"] == ("clean", None)
    examples = cut_examples(docs, 128)
    doc_of = dict(zip(examples["example_id"], examples["doc_id"]))
    pool, tasks = split_pool_and_tasks(examples, task_examples_per_domain=8, pool_examples_per_domain=None,
                                       shard_size=16, seed=0)
    for frame in (examples, pool, tasks):
        rows = frame.select("example_id", "dirt", "dirt_source").iter_rows()
        assert all(labels[doc_of[e]] == (k, s) for e, k, s in rows)
    assert "garbled" in set(pool["dirt"])
    assert set(tasks["dirt"]) == {"clean"}  # the last documents in reading order


def test_a_corpus_without_labels_gives_null_label_columns(tmp_path):
    write(tmp_path / "a.jsonl", [{"domain": "x", "text": long_text(f"w{i}-")} for i in range(3)])
    pool, tasks = split_pool_and_tasks(cut_examples(load_documents(tmp_path)[0], 128), task_examples_per_domain=8,
                                       pool_examples_per_domain=None, shard_size=16, seed=0)
    for frame in (pool, tasks):
        assert frame.schema["dirt"] == frame.schema["dirt_source"] == pl.Utf8
        assert frame["dirt"].null_count() == frame["dirt_source"].null_count() == frame.height


def test_a_non_string_label_names_file_line_and_field(tmp_path):
    f = write(tmp_path / "a.jsonl", [{"domain": "x", "text": "fine"}, {"domain": "x", "text": "t", "dirt": 3}])
    with pytest.raises(CorpusError, match=r"a\.jsonl: line 2: optional field 'dirt' must be a string or null, got int"):
        load_documents(f)


"""Export for trainers: mixtures load into Hugging Face `interleave_datasets` with their proportions,
the Megatron blend names every drawn domain, and selection manifests cut the selected bytes out
of the original documents."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import polars as pl
import pytest
import yaml

from grasp_pipeline.config import CorpusParams, ExportParams
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.ops.export import export_for_trainers
from grasp_pipeline.stages.corpus_shards import split_corpus


@pytest.fixture(scope="module")
def exported(pipeline_run, tmp_path_factory):
    """The tiny pipeline's mixtures and selections exported to a fresh folder."""
    out = tmp_path_factory.mktemp("export")
    store = DeltaStore(str(pipeline_run[0]))
    result = export_for_trainers(store, ExportParams(destination=str(out), megatron_prefix="/data/{domain}_text"))
    return store, out, result


def _grasp_mixture(out):
    manifest = json.loads((out / "export.json").read_text())
    (mixture_id,) = [m for m, entry in manifest["mixtures"].items() if entry["method"] == "grasp"]
    return json.loads((out / "mixtures" / f"{mixture_id}.json").read_text()), mixture_id


def test_an_exported_mixture_drives_interleave_datasets_to_its_proportions(exported):
    import datasets

    _, out, _ = exported
    mixture, _ = _grasp_mixture(out)
    form = mixture["hf_interleave_datasets"]
    rows = 20_000  # per domain, so no domain runs out while 10,000 rows are drawn
    sources = [datasets.Dataset.from_dict({"domain": [d] * rows, "i": list(range(rows))}) for d in form["domains"]]
    mixed = datasets.interleave_datasets(sources, probabilities=form["probabilities"], seed=0,
                                         stopping_strategy="first_exhausted")
    drawn = 10_000
    counts = pl.Series("domain", mixed.select(range(drawn))["domain"]).value_counts()
    observed = dict(zip(counts["domain"].to_list(), counts["count"].to_list()))
    for domain, p in zip(form["domains"], form["probabilities"]):
        sd = np.sqrt(drawn * p * (1 - p))
        assert abs(observed.get(domain, 0) - drawn * p) <= 4 * sd + 1, (domain, observed.get(domain), drawn * p)
    weights = mixture["domain_weights"]
    assert set(weights) >= set(form["domains"]) and abs(sum(weights.values()) - 1) < 1e-9
    assert all(weights[d] > 0 for d in form["domains"])  # zero-weight domains are left out of the HF form
    assert form["row"] == "one document of the corpus per row"


def _document_bytes() -> dict[str, list[int]]:
    """Each domain's document sizes in the embedded corpus (the tiny pipeline's), read here, not from a table."""
    from grasp_pipeline.corpus import load_documents

    documents, _ = load_documents(None)
    sized = documents.with_columns(n=pl.col("text").str.len_bytes()).group_by("domain").agg("n")
    return dict(sized.iter_rows())


def test_the_natural_mixture_is_the_corpus_own_proportions_not_the_capped_pools(exported):
    """Issue 27: `natural` (mixture_weights, and the loop's first counts) is each domain's share of the
    whole corpus, here within 2% of its byte share read from the documents, although the pool is capped
    to nearly the same count per domain."""
    store, *_ = exported
    sizes = {d: sum(n) for d, n in _document_bytes().items()}
    natural = dict(store.read("mixture_weights").filter(pl.col("method") == "natural")
                   .select("domain", "weight").iter_rows())
    assert natural == pytest.approx({d: b / sum(sizes.values()) for d, b in sizes.items()}, rel=0.02)
    pool = store.read("corpus_shards").group_by("domain").len()
    pool_shares = {d: n / pool["len"].sum() for d, n in pool.iter_rows()}
    assert max(abs(natural[d] - pool_shares[d]) for d in natural) > 0.05  # what the pool's counts would say


def test_corpus_natural_pool_keeps_the_pools_own_shares():
    params = CorpusParams(natural="pool", pool_examples_per_domain=40, task_examples_per_domain=8)
    pool, *_ = split_corpus(params, 128)
    counts = pool.group_by("domain").agg(pl.len(), pl.col("domain_natural").unique())
    assert all(len(w) == 1 for w in counts["domain_natural"])  # one weight per domain
    assert dict(zip(counts["domain"], [w[0] for w in counts["domain_natural"]])) == pytest.approx(
        {d: n / pool.height for d, n in zip(counts["domain"], counts["len"])})


def test_a_megatron_blend_with_source_has_one_prefix_per_file_weighted_by_its_bytes(tmp_path):
    """Issue 27: a domain's weight is split over its files (corpus_sources, the whole corpus) by bytes, so
    every file of a domain is read at the same rate; the per-domain blend is unchanged without {source}."""
    from grasp_pipeline.corpus import load_documents
    from grasp_pipeline.ops.export import megatron_blend

    documents, _ = load_documents(None)
    for domain, source, parts in (("code", "python_source", 3), ("prose", "english_literature", 2)):
        texts = documents.filter((pl.col("domain") == source) & (pl.col("dirt") == "clean"))["text"].to_list()
        for part in range(parts):  # files of different sizes
            rows = texts[part * 7: part * 7 + 2 + 3 * part]
            (tmp_path / domain).mkdir(exist_ok=True)
            (tmp_path / domain / f"part-{part}.jsonl").write_text(
                "".join(json.dumps({"id": f"{domain}{part}-{i}", "text": t}) + "\n" for i, t in enumerate(rows)))
    params = CorpusParams(corpus_path=str(tmp_path), domain_from_path="{domain}/*.jsonl", task_examples_per_domain=4,
                          pool_examples_per_domain=20, split_margin=0)
    pool, *_, sources = split_corpus(params, 128)
    assert sources.group_by("domain").agg(pl.col("bytes").sum()).sort("domain").rows() == \
        pool.group_by("domain").agg(pl.col("domain_bytes").first()).sort("domain").rows()
    assert sources.height == 5 and sources["bytes"].n_unique() == 5
    blend = megatron_blend([("code", 0.25), ("prose", 0.75)], "/tok/{source}_text_document", sources).split()
    weights = dict(zip(blend[1::2], map(float, blend[::2])))
    files = [(d, p) for d, n in (("code", 3), ("prose", 2)) for p in range(n)]
    assert set(weights) == {f"/tok/{d}/part-{p}_text_document" for d, p in files}
    for domain, share in (("code", 0.25), ("prose", 0.75)):
        mine = sources.filter(pl.col("domain") == domain)
        for source, size in mine.select("source", "bytes").iter_rows():
            prefix = f"/tok/{source.removesuffix('.jsonl')}_text_document"
            assert weights[prefix] == pytest.approx(share * size / mine["bytes"].sum(), rel=1e-9)
    assert megatron_blend([("code", 0.25), ("prose", 0.75)], "/d/{domain}", sources) == "0.25 /d/code 0.75 /d/prose"
    with pytest.raises(ValueError, match="no corpus_sources table"):
        megatron_blend([("code", 1.0)], "/tok/{source}", None)
    spaced = sources.with_columns(source=pl.lit("CPython 3.11 stdlib:json"))
    with pytest.raises(ValueError, match="domain 'code' has source 'CPython 3.11 stdlib:json'.*whitespace"):
        megatron_blend([("code", 1.0)], "/tok/{source}", spaced)


def _drawn_byte_shares(domains, probabilities, sizes: dict[str, list[int]], draws: int) -> dict[str, float]:
    """Draws `draws` documents with interleave_datasets (one dataset per domain, one row per document,
    each domain's documents repeated whole so none runs out) and returns each domain's share of the bytes."""
    import datasets
    import pyarrow as pa

    sources = []
    for domain, p in zip(domains, probabilities):
        copies = -(-int(2 * p * draws + 1000) // len(sizes[domain]))  # whole copies, enough that none runs out
        rows = copies * len(sizes[domain])
        sources.append(datasets.Dataset(pa.table({"domain": pa.array([domain] * rows),
                                                  "n_bytes": pa.array(np.tile(sizes[domain], copies))})))
    mixed = datasets.interleave_datasets(sources, probabilities=probabilities, seed=0,
                                         stopping_strategy="first_exhausted").select(range(draws))
    drawn = pl.from_arrow(mixed.with_format("arrow")[:])
    by_domain = drawn.group_by("domain").agg(pl.col("n_bytes").sum())
    return {d: b / drawn["n_bytes"].sum() for d, b in by_domain.iter_rows()}


def test_sampling_documents_by_the_exported_probabilities_reaches_the_byte_shares_within_two_percent(exported):
    """Issue 27's round trip: a trainer interleaving per-domain document datasets with the exported
    probabilities trains on the mixture's byte shares (within 2% of each); the weights used directly as
    probabilities do not, because documents differ in length from domain to domain."""
    _, out, _ = exported
    sizes = _document_bytes()
    manifest = json.loads((out / "export.json").read_text())
    for mixture_id in manifest["mixtures"]:
        mixture = json.loads((out / "mixtures" / f"{mixture_id}.json").read_text())
        form, weights = mixture["hf_interleave_datasets"], mixture["domain_weights"]
        target = {d: weights[d] / sum(weights[x] for x in form["domains"]) for d in form["domains"]}
        # in expectation, exactly: a draw from domain d brings its mean document bytes
        mean = {d: float(np.mean(sizes[d])) for d in form["domains"]}
        expected = np.array(form["probabilities"]) * [mean[d] for d in form["domains"]]
        np.testing.assert_allclose(expected / expected.sum(), [target[d] for d in form["domains"]], rtol=0.02)
        assert mixture["corpus_natural"] == pytest.approx(
            {d: sum(n) / sum(map(sum, sizes.values())) for d, n in sizes.items()}, rel=0.01)
    # and drawn: the grasp mixture through interleave_datasets, then the weights as probabilities
    mixture, _ = _grasp_mixture(out)
    form, weights = mixture["hf_interleave_datasets"], mixture["domain_weights"]
    target = {d: weights[d] / sum(weights[x] for x in form["domains"]) for d in form["domains"]}
    # a domain's draws walk its documents in order: a million draws keep the last, partial pass over
    # them (and the draw counts' own noise, 0.3% at a ninth) well inside 2%
    shares = _drawn_byte_shares(form["domains"], form["probabilities"], sizes, 1_000_000)
    misses = {d: shares[d] / target[d] - 1 for d in form["domains"]}
    assert max(map(abs, misses.values())) <= 0.02, misses
    # what the correction fixes: the weights as probabilities, in expectation, miss a domain by more than 2%
    naive = np.array([target[d] * np.mean(sizes[d]) for d in form["domains"]])
    naive_misses = naive / naive.sum() / [target[d] for d in form["domains"]] - 1
    assert np.abs(naive_misses).max() > 0.02, naive_misses


def test_the_mixture_yaml_and_the_megatron_blend_carry_the_same_weights(exported):
    store, out, _ = exported
    mixture, mixture_id = _grasp_mixture(out)
    assert yaml.safe_load((out / "mixtures" / f"{mixture_id}.yaml").read_text()) == mixture["domain_weights"]
    parts = mixture["megatron_data_path"].split()
    blend = dict(zip(parts[1::2], map(float, parts[0::2])))
    drawn = mixture["hf_interleave_datasets"]["domains"]  # Megatron draws token sequences: the weights themselves
    weights = mixture["domain_weights"]
    assert blend == pytest.approx({f"/data/{d}_text": weights[d] / sum(weights[x] for x in drawn) for d in drawn})
    stored = store.read("mixture_weights").filter(pl.col("mixture_id") == mixture_id)
    assert dict(stored.select("domain", "weight").iter_rows()) == mixture["domain_weights"]


def test_a_selection_manifest_cuts_the_selected_examples_out_of_the_original_documents(exported):
    from grasp_pipeline.corpus import load_documents

    store, out, _ = exported
    manifest = json.loads((out / "export.json").read_text())
    selections = store.read("curated_selections")
    documents, _ = load_documents(None)  # the tiny pipeline ran on the embedded corpus
    text_of = {(d, i): t for d, i, t in documents.select("domain", "doc_id", "text").iter_rows()}
    pool = store.read("corpus_shards").select("example_id", "text")
    grasp_id = next(s for s, e in manifest["selections"].items() if e["method"] == "grasp")
    rows = pl.read_parquet(out / "selections" / f"{grasp_id}.parquet")
    expected = selections.filter(pl.col("selection_id") == grasp_id).sort("rank")
    assert rows["example_id"].to_list() == expected["example_id"].to_list()  # pick order kept
    assert rows.columns == ["rank", "example_id", "domain", "source", "doc_id", "offset", "n_bytes"]
    for example_id, domain, doc_id, offset, n_bytes, text in rows.join(pool, on="example_id").select(
            "example_id", "domain", "doc_id", "offset", "n_bytes", "text").iter_rows():
        assert text_of[(domain, doc_id)].encode("utf-8")[offset:offset + n_bytes].decode("utf-8") == text, example_id
    counts = manifest["selections"][grasp_id]["domains"]
    assert counts == dict(rows.group_by("domain").len().iter_rows()) and sum(counts.values()) == expected.height


def test_the_export_records_the_table_versions_it_was_made_from(exported):
    store, out, result = exported
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["reads"] == result.reads == {t: store.version(t) for t in (
        "corpus_shards", "corpus_sources", "curated_selections", "mixture_weights", "curation_test_verdict",
        "curation_rounds")}  # the verdict: reported; corpus_sources: per-file Megatron weights; rounds: the run size
    assert result.writes == []  # files, no table
    assert not list(out.rglob(".*.tmp"))  # every file was moved into place


def test_exporting_an_unknown_method_is_an_error_naming_the_known_ones(pipeline_run, tmp_path):
    store = DeltaStore(str(pipeline_run[0]))
    with pytest.raises(ValueError, match=r"'nope'.*grasp"):
        export_for_trainers(store, ExportParams(destination=str(tmp_path), methods=("grasp", "nope")))


def test_grasp_export_writes_the_files_and_reports_trainer_export_to_the_instance(pipeline_run, tmp_path,
                                                                                  monkeypatch, capsys):
    import dagster as dg

    from assets.cli import main

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    out = tmp_path / "for-trainers"
    assert main(["export", "--root", str(pipeline_run[0]), "--out", str(out), "--method", "grasp"]) == 0
    printed = capsys.readouterr().out
    assert "mixture sg-" in printed and "selection sg-" in printed and "reported to the Dagster instance" in printed
    assert sorted(p.name for p in (out / "selections").iterdir()) == [
        f"{s}.parquet" for s in json.loads((out / "export.json").read_text())["selections"]]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("trainer_export"))
        assert event.asset_materialization.metadata["dagster/uri"].value == str(out)


@pytest.mark.parametrize("args, message", [
    (["--out", "{file}"], r"grasp: error: export.destination = '.*a-file': is a file, not a folder"),
    (["--megatron-prefix", "{{nodomain}}"],
     r"grasp: error: export.megatron_prefix = '\{nodomain\}': may name only \{domain\} and \{source\}"),
])
def test_grasp_export_onto_a_file_or_with_a_bad_prefix_says_so_in_one_line(pipeline_run, tmp_path, capsys, args,
                                                                           message):
    from assets.cli import main

    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    args = [a.format(file=existing) for a in args]
    assert main(["export", "--root", str(pipeline_run[0]), *args]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(message + r".*\n", err, re.S) and err.count("\n") == 1 and "Traceback" not in err
    assert existing.read_text() == "keep me"


def test_a_damaged_table_is_one_line_and_exit_1_and_debug_shows_the_traceback(pipeline_run, tmp_path, capsys):
    from assets.cli import main

    root = tmp_path / "root"
    shutil.copytree(pipeline_run[0], root)
    log = root / "mixture_weights" / "_delta_log"
    last = sorted(log.glob("*.json"))[-1]
    last.write_text(last.read_text()[: len(last.read_text()) // 2])  # a truncated commit file
    code = main(["export", "--root", str(root), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code in (1, 2) and err.startswith("grasp: error") and err.count("\n") == 1, err
    assert "mixture_weights" in err and "Traceback" not in err
    with pytest.raises(Exception, match="mixture_weights"):  # --debug lets the error itself through
        main(["--debug", "export", "--root", str(root), "--out", str(tmp_path / "out")])


def test_an_export_to_object_storage_lands_there_with_the_same_files(pipeline_run, s3_root, exported):
    """The destination can be an s3:// URI: credentials and endpoint from the same environment as the tables."""
    from pyarrow import fs

    _, local_out, _ = exported
    store = DeltaStore(str(pipeline_run[0]))
    destination = f"{s3_root}/exports"
    export_for_trainers(store, ExportParams(destination=destination, megatron_prefix="/data/{domain}_text"))
    remote, base = fs.FileSystem.from_uri(destination)
    listing = remote.get_file_info(fs.FileSelector(base, recursive=True))
    names = sorted(i.path.removeprefix(base + "/") for i in listing if i.type == fs.FileType.File)
    local = sorted(p.relative_to(local_out).as_posix() for p in local_out.rglob("*") if p.is_file())
    assert names == local
    with remote.open_input_stream(f"{base}/export.json") as stream:
        assert json.loads(stream.read())["destination"] == destination


def test_the_export_says_which_mixture_the_held_out_test_supports_with_the_intervals(exported):
    from grasp_pipeline.evaluation.summary import verdict_table

    store, out, _ = exported
    held_out = json.loads((out / "export.json").read_text())["held_out_mixtures"]
    verdict = verdict_table(store, "curation_test_verdict").filter(pl.col("comparison").str.starts_with("mixture-"))
    assert [r["comparison"] for r in held_out["rows"]] == verdict["comparison"].to_list()
    assert [r["ci_low"] for r in held_out["rows"]] == pytest.approx(verdict["ci_low"].to_list())
    assert [r["ci_high"] for r in held_out["rows"]] == pytest.approx(verdict["ci_high"].to_list())
    over_natural = verdict.filter(pl.col("comparison").str.ends_with("− mixture-natural") & (pl.col("ci_low") > 0))
    best = over_natural.sort("gain", descending=True)["comparison"].to_list()[:1]
    assert held_out["supported"] == (best[0].split(" − ")[0].removeprefix("mixture-") if best else None)
    assert (held_out["supported"] or "supports none") in held_out["finding"]
    # the manifest names the verdict's version it was read from
    assert json.loads((out / "export.json").read_text())["reads"]["curation_test_verdict"] == \
        store.version("curation_test_verdict")


def test_the_olmix_form_counts_each_domains_repetitions_at_the_stated_run_size(exported, tmp_path):
    """A domain's repetition factor is how often a run of `export.training_bytes` reads it: weight × size ÷
    its bytes in the whole corpus (the document sizes read here, not from a table, agree within 1%)."""
    store, out, _ = exported
    mixture, mixture_id = _grasp_mixture(out)
    corpus = {d: sum(n) for d, n in _document_bytes().items()}
    assert {d: s["bytes"] for d, s in mixture["corpus"].items()} == pytest.approx(corpus, rel=0.01)
    once = mixture["olmix"]
    assert once["max_tokens"] == sum(s["bytes"] for s in mixture["corpus"].values())  # 0: the corpus once
    for domain, weight in mixture["domain_weights"].items():
        entry = once["mix"][domain]
        assert entry["weight"] == weight
        assert entry["repetition_factor"] == pytest.approx(weight / mixture["corpus_natural"][domain])
    big = sum(corpus.values()) * 10  # ten times the corpus: every domain of weight > 1/10 of its share repeats
    export_for_trainers(store, ExportParams(destination=str(tmp_path), methods=("grasp",), training_bytes=big))
    tenfold = json.loads((tmp_path / "mixtures" / f"{mixture_id}.json").read_text())["olmix"]
    assert tenfold["max_tokens"] == big
    for domain, entry in tenfold["mix"].items():
        assert entry["repetition_factor"] == pytest.approx(once["mix"][domain]["repetition_factor"] * big
                                                           / once["max_tokens"])
    assert tenfold["repeated"] == sorted(d for d, e in tenfold["mix"].items() if e["repetition_factor"] > 1)
    assert len(tenfold["repeated"]) > len(once["repeated"])

"""Export for trainers: mixtures in the forms training frameworks take, selections as manifests.

Per mixture (`mixtures/<mixture_id>.json`, and `<mixture_id>.yaml` with just the weights):

- `domain_weights`: {domain: weight}, every domain of the pool, summing to 1, stated as shares of
  training bytes (`weight_unit`): the pipeline mixes examples, and a text example is a piece of
  a fixed number of bytes (only a document's last piece is shorter: on the embedded corpus a
  domain's mean piece is 126–127 of 128 bytes), so example shares are byte shares to within 1%;
- `hf_interleave_datasets`: `domains` and `probabilities` in one order, for
  `datasets.interleave_datasets([ds[d] for d in domains], probabilities=probabilities)` where
  each `ds[d]` holds one row per *document* of domain d (the corpus as read). A draw picks a
  document, and documents differ in length from domain to domain, so the probabilities are the
  weights divided by each domain's mean document bytes (from `corpus_shards`' domain_documents
  and domain_bytes, the whole corpus before the split and the pool cap):
  the drawn bytes then land on `domain_weights` (tests/test_export.py: within 2% on the
  embedded corpus, a million documents drawn; the weights used as probabilities give
  python_docs 5% too little, its documents being 678 bytes on average against 719–729). Domains of
  weight 0, or below 1e-12, are left out: with `stopping_strategy="all_exhausted"` a dataset
  that is never drawn would never be exhausted;
- `megatron_data_path`: a Megatron-LM style blend, `"w1 prefix1 w2 prefix2 …"` for
  `--data-path`, each prefix from `megatron_prefix` with `{domain}` filled in. Megatron draws
  fixed-length token sequences in proportion to the blend weights, so these are the weights
  themselves (shares of tokens, not of documents). A real corpus has many files per domain,
  each tokenised to its own prefix: with `{source}` in `megatron_prefix` the blend has one
  prefix per file of the domain (`corpus_sources`: its path under the corpus root, extensions
  dropped) and the domain's weight is split over them by their bytes, so each file is read
  at the same rate as the rest of its domain;
- `olmix`: an Olmix-style `mix` ({domain: {weight, repetition_factor}}) at `max_tokens` =
  `export.training_bytes` (0: `loop.training_bytes`, the run the mixers were capped for, or the
  whole corpus once when that is 0 too): a domain's repetition factor is how many
  times a run of that size reads it (weight × size ÷ its bytes in the corpus); `repeated` names
  the domains read more than once, which data-constrained scaling says gain less per byte;
- `corpus`: each domain's documents, examples and bytes in the whole corpus, and
  `corpus_natural`, the corpus's own byte shares (the `natural` mixture of `mixture_weights`
  is its example shares, the same to within 1%, unless `corpus.natural` = pool).

Per selection (`selections/<selection_id>.parquet`): one row per selected example in pick
order — rank, example_id, domain, source (the corpus file), doc_id, offset (byte offset of
the example in the document's UTF-8 text) and n_bytes — enough to cut the training set out
of the original documents; counts per domain are in `export.json`, which also records the
table versions the files were made from and, under `held_out_mixtures`, which mixture the
held-out test supports (`supported`, `finding`) with every mixture's verdict row and interval
(evaluation/verdict_report.py; null before `curation_test` has run). Files are written under a temporary name and moved
into place, so a reader never sees half a file.
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid

import polars as pl

from ..config.params import ExportParams
from ..corpus.files import SUPPORTED_SUFFIXES
from ..evaluation.verdict_report import read_verdict
from ..infra import progress
from ..infra.storage import DeltaStore
from ..stages.base import StageResult, stage
from ..stages.tables import check_one_fit, target_run

MANIFEST_COLUMNS = ["rank", "example_id", "domain", "source", "doc_id", "offset", "n_bytes"]
# the corpus readers' file suffixes, dropped from a source to name its Megatron prefix
CORPUS_SUFFIXES = re.compile("(" + "|".join(re.escape(s) for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True))
                             + ")$")
# weights at or below this are round-off of the simplex projection, not a share to draw
NEGLIGIBLE_WEIGHT = 1e-12


def default_destination(store: DeltaStore) -> str:
    """`exports` under the storage root."""
    return f"{store.root.rstrip('/')}/exports"


WEIGHT_UNIT = ("share of training bytes (the pipeline mixes examples of a fixed number of bytes; a whole-document "
               "workload's examples are its documents)")


def corpus_sizes(pool: pl.DataFrame) -> dict[str, dict[str, int]] | None:
    """{domain: {documents, examples, bytes}} of the whole corpus, from `corpus_shards`; None for a
    pool written before these columns existed (the export then says it cannot correct for length)."""
    columns = ("domain_documents", "domain_examples", "domain_bytes")
    if not set(columns) <= set(pool.columns):
        return None
    rows = pool.select("domain", *columns).unique("domain").sort("domain")
    return {d: {"documents": n, "examples": e, "bytes": b} for d, n, e, b in rows.iter_rows()}


def megatron_blend(weights: list[tuple[str, float]], prefix: str, sources: pl.DataFrame | None = None) -> str:
    """The `--data-path` blend of (domain, share) pairs: one prefix per domain, or with `{source}` in
    `prefix` one per source of the domain in `sources` (corpus_sources rows), the domain's share split
    by their bytes. A source name Megatron would split (whitespace) is an error naming it."""
    if "{source}" not in prefix:
        return " ".join(f"{w:.10g} {prefix.format(domain=d)}" for d, w in weights)
    if sources is None:
        raise ValueError(f"export.megatron_prefix = {prefix!r} names {{source}}, but this root has no corpus_sources "
                         "table (written by corpus_shards since issue 27): rematerialise corpus_shards")
    parts = []
    for domain, share in weights:
        mine = sources.filter(pl.col("domain") == domain).sort("source")
        if mine.is_empty():
            raise ValueError(f"corpus_sources has no source of domain {domain!r}: rematerialise corpus_shards")
        for source, size in mine.select("source", "bytes").iter_rows():
            name = CORPUS_SUFFIXES.sub("", source)  # news/part-0001.jsonl.gz → news/part-0001
            if not name or re.search(r"\s", name):
                raise ValueError(f"corpus_sources: domain {domain!r} has source {source!r}, which cannot name a "
                                 "Megatron prefix (empty or with whitespace; the records' own `source` field is used "
                                 "where they have one); use {domain} alone in export.megatron_prefix")
            parts.append(f"{share * size / mine['bytes'].sum():.10g} {prefix.format(domain=domain, source=name)}")
    return " ".join(parts)


def mixture_forms(rows: pl.DataFrame, megatron_prefix: str = "{domain}",
                  sizes: dict[str, dict[str, int]] | None = None, training_bytes: int = 0,
                  sources: pl.DataFrame | None = None) -> dict:
    """Returns the trainer forms of one mixture's mixture_weights rows (see the module docstring);
    without `sizes` the Hugging Face probabilities are the weights, and say so."""
    rows = rows.sort("domain")
    weights = dict(zip(rows["domain"].to_list(), rows["weight"].to_list()))
    drawn = [(d, w) for d, w in weights.items() if w > NEGLIGIBLE_WEIGHT]
    total = sum(w for _, w in drawn)
    if not drawn or total <= 0:
        raise ValueError(f"mixture {rows['mixture_id'][0]!r} has no domain of positive weight")
    shares = [w / total for _, w in drawn]
    blend = megatron_blend([(d, p) for (d, _), p in zip(drawn, shares)], megatron_prefix, sources)
    missing = sorted(d for d, _ in drawn if sizes is None or d not in sizes)
    if missing:
        per_document, row = shares, ("one example per row (corpus sizes unknown for "
                                     f"{', '.join(missing)}: rematerialise corpus_shards for per-document rows)")
    else:  # a draw takes a whole document: a byte share ÷ the domain's mean document bytes, renormalised
        raw = [w * sizes[d]["documents"] / sizes[d]["bytes"] for (d, _), w in zip(drawn, shares)]
        per_document, row = [r / sum(raw) for r in raw], "one document of the corpus per row"
    return {"mixture_id": rows["mixture_id"][0], "method": rows["method"][0],
            "budget": int(rows["budget"][0]) if "budget" in rows.columns else None,
            "predicted_utility": float(rows["predicted_utility"][0]),
            "domain_weights": weights, "weight_unit": WEIGHT_UNIT,
            "hf_interleave_datasets": {"domains": [d for d, _ in drawn], "probabilities": per_document,
                                       "row": row},
            "megatron_data_path": blend, "olmix": _olmix(weights, sizes, training_bytes),
            "corpus": sizes, "corpus_natural": _natural(sizes)}


def _olmix(weights: dict[str, float], sizes: dict[str, dict[str, int]] | None, training_bytes: int) -> dict | None:
    """The Olmix-style mix at a stated run size (module docstring); None without the corpus sizes."""
    if not sizes or any(d not in sizes for d in weights):
        return None
    size = training_bytes or sum(s["bytes"] for s in sizes.values())
    mix = {d: {"weight": w, "repetition_factor": w * size / sizes[d]["bytes"]} for d, w in weights.items()}
    return {"max_tokens": size, "unit": "bytes", "mix": mix,
            "repeated": sorted(d for d, m in mix.items() if m["repetition_factor"] > 1)}


def _natural(sizes: dict[str, dict[str, int]] | None) -> dict[str, float] | None:
    if not sizes:
        return None
    total = sum(s["bytes"] for s in sizes.values())
    return {d: s["bytes"] / total for d, s in sizes.items()}


def selection_manifest(rows: pl.DataFrame, pool: pl.DataFrame) -> pl.DataFrame:
    """Returns the byte-range manifest of one selection's curated_selections rows, in rank order."""
    joined = rows.select("rank", "example_id").join(
        pool.select("example_id", "domain", "source", "doc_id", "offset", "n_bytes"), on="example_id", how="left")
    missing = joined.filter(pl.col("doc_id").is_null())
    if missing.height:
        raise ValueError(f"selection {rows['selection_id'][0]!r}: {missing.height} example(s) (first "
                         f"{missing['example_id'][0]}) are not in corpus_shards; the corpus changed since the "
                         "selection was made: rematerialise curated_selection")
    return joined.sort("rank").select(MANIFEST_COLUMNS)


@stage
def export_for_trainers(store: DeltaStore, params: ExportParams) -> StageResult:
    """Writes every mixture's trainer forms and every selection's manifest under the destination;
    returns a StageResult with no table writes (the files and counts are in its metrics and
    its `export.json` artifact)."""
    destination = params.destination or default_destination(store)
    mixtures, selections = _chosen(store.read("mixture_weights"), store.read("curated_selections"), params.methods)
    check_one_fit({"mixture_weights": (mixtures, "mixture_id"), "curated_selections": (selections, "selection_id")})
    pool = store.read("corpus_shards")
    sizes = corpus_sizes(pool)
    sources = store.read("corpus_sources") if store.exists("corpus_sources") else None
    files = _Files(destination)
    run_bytes = params.training_bytes or target_run(store)[0]  # unset: the run the mixers were capped for
    manifest = {"destination": destination, "mixtures": {}, "selections": {}}
    with progress.task("exporting", total=mixtures["mixture_id"].n_unique() + selections["selection_id"].n_unique(),
                       unit="file") as done:
        for (mixture_id,), rows in mixtures.group_by("mixture_id", maintain_order=True):
            forms = mixture_forms(rows, params.megatron_prefix, sizes, run_bytes, sources)
            files.write_text(f"mixtures/{mixture_id}.json", json.dumps(forms, indent=2, sort_keys=True) + "\n")
            files.write_text(f"mixtures/{mixture_id}.yaml", _yaml(forms["domain_weights"]))
            manifest["mixtures"][mixture_id] = {"file": f"mixtures/{mixture_id}.json", "method": forms["method"],
                                                "domain_weights": forms["domain_weights"]}
            done.advance()
        for (selection_id,), rows in selections.group_by("selection_id", maintain_order=True):
            table = selection_manifest(rows, pool)
            files.write_parquet(f"selections/{selection_id}.parquet", table)
            manifest["selections"][selection_id] = {
                "file": f"selections/{selection_id}.parquet", "method": rows["method"][0], "rows": table.height,
                "budget": int(rows["budget"][0]), "bytes": int(table["n_bytes"].sum()),
                "domains": dict(sorted(table.group_by("domain").len().iter_rows()))}
            done.advance()
    # which mixture the held-out test supports, next to the weights (none before curation_test ran)
    verdict = read_verdict(store, "curation_test_verdict") if store.exists("curation_test_verdict") else None
    manifest["held_out_mixtures"] = verdict.mixtures() if verdict is not None else None
    manifest["reads"] = dict(sorted(getattr(store, "versions", {}).items()))
    files.write_text("export.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    result = StageResult(metrics={"destination": destination, "mixtures": len(manifest["mixtures"]),
                                  "selections": len(manifest["selections"]), "files": len(files.written)})
    result.artifacts["export.json"] = manifest
    return result


def _chosen(mixtures: pl.DataFrame, selections: pl.DataFrame, methods) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (mixtures, selections) of the methods asked for (every method for none), sorted by id;
    a method in neither table is an error naming the known ones."""
    if methods:
        known = set(mixtures["method"].to_list()) | set(selections["method"].to_list())
        unknown = sorted(set(methods) - known)
        if unknown:
            raise ValueError(f"export.methods: {unknown} are not methods of mixture_weights or curated_selections "
                             f"(they have {sorted(known)})")
        mixtures = mixtures.filter(pl.col("method").is_in(list(methods)))
        selections = selections.filter(pl.col("method").is_in(list(methods)))
    return mixtures.sort("mixture_id"), selections.sort("selection_id")


def _yaml(weights: dict) -> str:
    import yaml

    return yaml.safe_dump({d: float(w) for d, w in weights.items()}, sort_keys=True)


class _Files:
    """Writes files under a local folder or an object-store URI (pyarrow filesystems, credentials
    from the same environment variables as the tables), each under a temporary name first and
    then moved into place."""

    def __init__(self, destination: str):
        from pyarrow import fs

        if "://" in destination and not destination.startswith("file://"):
            self.fs, self.base = fs.FileSystem.from_uri(destination)
        else:
            path = destination.removeprefix("file://")
            if os.path.exists(path) and not os.path.isdir(path):
                raise ValueError(f"export.destination = {destination!r}: is a file, not a folder; name a folder "
                                 "(it is created if missing)")
            os.makedirs(path, exist_ok=True)
            self.fs, self.base = fs.LocalFileSystem(), os.path.abspath(path)
        self.written: list[str] = []

    def _put(self, name: str, payload: bytes) -> None:
        final = f"{self.base.rstrip('/')}/{name}"
        folder = final.rsplit("/", 1)[0]
        self.fs.create_dir(folder, recursive=True)
        temporary = f"{folder}/.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(temporary) as out:
            out.write(payload)
        self.fs.move(temporary, final)
        self.written.append(name)

    def write_text(self, name: str, text: str) -> None:
        self._put(name, text.encode("utf-8"))

    def write_parquet(self, name: str, frame: pl.DataFrame) -> None:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        self._put(name, buffer.getvalue())

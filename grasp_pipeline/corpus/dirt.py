"""Dirt as real pretraining corpora carry it, added to a clean corpus deterministically.

`add_dirt(records)` returns the records of a JSON-lines corpus (dicts with id, domain,
source, license, text) with short dirt documents added, each labelled (`dirt`, `dirt_source`;
see labels.py), and every clean document labelled `clean`. Each dirt document is made from
one clean example of EXAMPLE_BYTES (or from a template) and is itself one example long, so
cutting the corpus into examples gives exactly one pool example per dirt document:

- `exact_duplicate`: a verbatim copy of a clean example, in clusters of 1..10 copies;
- `near_duplicate`: a copy with 1..4 characters substituted, inserted or deleted, 1..6 per source;
- `boilerplate`: navigation, cookie, licence and footer text (boilerplate.py), many variants per template;
- `garbled`: a clean example's characters shuffled (same character and byte frequencies, no structure);
- `mislabelled`: a clean example of a neighbouring domain (NEIGHBOURS) filed under this one.

`dirt_source` is the cluster: the example id (decimal string) of the clean example a copy
was made from, or `boilerplate:<family>/<template>`. Dirt is made only from the first
SOURCE_FRACTION of each domain's examples in reading order (never from text near the
held-out task stretch at the end of a domain), and every domain's dirt documents come
before its clean documents, so the task sets (the last examples of each domain) stay clean.
`strip_dirt` undoes it, so `add_dirt(strip_dirt(records))` is idempotent. Shares and their
sources: data/PROVENANCE.md.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .boilerplate import boilerplate_family, render_boilerplate, template_names
from .examples import cut_examples
from .labels import CLEAN, DIRT_COLUMNS, DIRT_KINDS

# Share of each kind among a domain's examples once the dirt is added (17% in all).
DIRT_SHARES = {"exact_duplicate": 0.04, "near_duplicate": 0.04, "boilerplate": 0.04, "garbled": 0.02,
               "mislabelled": 0.03}
DIRT_SEED = 0
EXAMPLE_BYTES = 128
SOURCE_FRACTION = 0.75  # dirt is made from the first 75% of each domain's examples (reading order)
MIN_SOURCE_BYTES = 100  # sources are full-length examples, not document tails

# Where a mislabelled document comes from: domains a language identifier or a crawler's
# site classifier confuses with this one (related languages, prose about code and code).
NEIGHBOURS = {
    "chinese_literature": ("english_literature", "python_docs"),
    "dutch_literature": ("german_literature", "english_literature"),
    "english_literature": ("french_literature", "python_docs"),
    "french_literature": ("italian_literature", "latin_hymns", "english_literature"),
    "german_literature": ("dutch_literature", "english_literature"),
    "italian_literature": ("latin_hymns", "french_literature"),
    "latin_hymns": ("italian_literature", "french_literature"),
    "python_docs": ("python_source", "english_literature"),
    "python_source": ("python_docs",),
}


def strip_dirt(records: list[dict]) -> list[dict]:
    """Returns the clean records (no `dirt` field, or `clean`) without their label fields, in order."""
    return [{k: v for k, v in r.items() if k not in DIRT_COLUMNS}
            for r in records if r.get("dirt") in (None, CLEAN)]


def add_dirt(records: list[dict], seed: int = DIRT_SEED, shares: dict[str, float] = DIRT_SHARES) -> list[dict]:
    """Returns the clean records of `records` with labelled dirt documents added (see module doc).

    Per domain (in order of first appearance), its dirt documents (shuffled, ids
    `<domain>/web/<n>`) come first, then its clean documents in their original order,
    labelled `clean`. Same records and seed give the same output.
    """
    clean = strip_dirt(records)
    rng = np.random.default_rng(seed)
    maker = _Maker(rng, _source_examples(clean))
    out = []
    for domain in dict.fromkeys(r["domain"] for r in clean):
        docs = [r for r in clean if r["domain"] == domain]
        dirt = maker.dirt_for(domain, docs[0], shares)
        order = rng.permutation(len(dirt))
        out += [{"id": f"{domain}/web/{n:05d}", **dirt[i]} for n, i in enumerate(order)]
        out += [{**r, "dirt": CLEAN, "dirt_source": None} for r in docs]
    _check_one_example_each([r for r in out if r["dirt"] != CLEAN])
    return out


def corpus_bytes(records: list[dict]) -> bytes:
    """Returns the gzipped JSON lines of `records` (byte-identical for the same records)."""
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    # mtime=0 and gzip.compress (no file name in the header) keep the output byte-identical
    return gzip.compress(lines.encode("utf-8"), compresslevel=9, mtime=0)


def read_records(data: bytes) -> list[dict]:
    """Returns the records of gzipped JSON lines."""
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


@dataclass
class _Domain:
    """One domain's clean examples: how many, and those dirt may be made from (shuffled on first use)."""
    examples: int
    sources: pl.DataFrame  # example_id, text, source, license
    order: np.ndarray | None = None
    next: int = 0


def _source_examples(clean: list[dict]) -> dict[str, _Domain]:
    """Returns per domain its example count and the examples dirt may be made from."""
    docs = pl.DataFrame({"doc_id": [r["id"] for r in clean], "domain": [r["domain"] for r in clean],
                         "source": [r["source"] for r in clean], "text": [r["text"] for r in clean]})
    licences = pl.DataFrame({"doc_id": [r["id"] for r in clean], "license": [r.get("license") for r in clean]},
                            schema={"doc_id": pl.Utf8, "license": pl.Utf8})
    examples = cut_examples(docs, EXAMPLE_BYTES).join(licences, on="doc_id", how="left", maintain_order="left")
    domains = {}
    for group in examples.partition_by("domain", maintain_order=True):
        head = group.head(int(group.height * SOURCE_FRACTION))
        tail_content = group.tail(group.height - head.height)["content_sha1"].implode()
        sources = (head.filter((pl.col("n_bytes") >= MIN_SOURCE_BYTES) & ~pl.col("content_sha1").is_in(tail_content))
                   .unique("content_sha1", keep="first", maintain_order=True)
                   .select("example_id", "text", "source", "license"))
        domains[group["domain"][0]] = _Domain(group.height, sources)
    return domains


@dataclass
class _Maker:
    rng: np.random.Generator
    domains: dict[str, _Domain]
    used: set[int] = field(default_factory=set)  # each clean example is the source of one cluster at most

    def take(self, domain: str) -> dict:
        """Returns an unused source example of `domain` (example_id, text, source, license)."""
        d = self.domains[domain]
        if d.order is None:
            d.order = self.rng.permutation(d.sources.height)
        while d.next < len(d.order):
            row = d.sources.row(int(d.order[d.next]), named=True)
            d.next += 1
            if row["example_id"] not in self.used:
                self.used.add(row["example_id"])
                return row
        raise ValueError(f"domain {domain!r} has too few clean examples to make its dirt from; "
                         "lower the dirt shares")

    def dirt_for(self, domain: str, first_doc: dict, shares: dict[str, float]) -> list[dict]:
        """Returns `domain`'s dirt documents (without ids), kind by kind."""
        unknown = set(shares) - set(DIRT_KINDS)
        if unknown:
            raise ValueError(f"unknown dirt kinds {sorted(unknown)}; known: {list(DIRT_KINDS)}")
        total = self.domains[domain].examples / (1 - sum(shares.values()))
        counts = {kind: round(share * total) for kind, share in shares.items()}
        makers = {"exact_duplicate": self.duplicates, "near_duplicate": self.near_duplicates,
                  "boilerplate": lambda d, n: self.boilerplate(d, n, first_doc), "garbled": self.garbled,
                  "mislabelled": self.mislabelled}
        return [doc for kind in DIRT_KINDS if counts.get(kind) for doc in makers[kind](domain, counts[kind])]

    def duplicates(self, domain: str, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            src = self.take(domain)
            copies = min(int(self.rng.geometric(0.4)), 10, n - len(out))
            out += [_doc(domain, src, src["text"], "exact_duplicate") for _ in range(copies)]
        return out

    def near_duplicates(self, domain: str, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            src = self.take(domain)
            variants = {src["text"]}
            for _ in range(min(int(self.rng.geometric(0.5)), 6, n - len(out))):
                text = _edited(src["text"], self.rng)
                for _ in range(16):  # an edit can undo another (or fall in the cut tail): edit again
                    if text not in variants:
                        break
                    text = _edited(src["text"], self.rng)
                if text not in variants:
                    variants.add(text)
                    out.append(_doc(domain, src, text, "near_duplicate"))
        return out

    def boilerplate(self, domain: str, n: int, first_doc: dict) -> list[dict]:
        names = template_names(domain)
        family = boilerplate_family(domain)
        origin = {"source": first_doc["source"], "license": first_doc.get("license")}
        out = []
        for _ in range(n):
            name = names[int(self.rng.integers(len(names)))]
            out.append({"domain": domain, **origin, "text": render_boilerplate(domain, name, self.rng),
                        "dirt": "boilerplate", "dirt_source": f"boilerplate:{family}/{name}"})
        return out

    def garbled(self, domain: str, n: int) -> list[dict]:
        out = []
        while len(out) < n:
            src = self.take(domain)
            chars = list(src["text"])
            for _ in range(8):  # a text of one repeated character cannot be garbled; try another source
                text = "".join(chars[i] for i in self.rng.permutation(len(chars)))
                if text != src["text"]:
                    out.append(_doc(domain, src, text, "garbled"))
                    break
        return out

    def mislabelled(self, domain: str, n: int) -> list[dict]:
        neighbours = [d for d in NEIGHBOURS.get(domain, ()) if d in self.domains] or \
                     [d for d in self.domains if d != domain]
        return [_doc(domain, self.take(neighbours[int(self.rng.integers(len(neighbours)))]), None, "mislabelled")
                for _ in range(n)]


def _doc(domain: str, src: dict, text: str | None, kind: str) -> dict:
    """Returns a dirt record filed under `domain`, made from source example `src` (its text if `text` is None)."""
    return {"domain": domain, "source": src["source"], "license": src["license"],
            "text": src["text"] if text is None else text, "dirt": kind, "dirt_source": str(src["example_id"])}


def _edited(text: str, rng: np.random.Generator) -> str:
    """Returns `text` with 1..4 characters substituted, inserted or deleted (new characters drawn
    from the text itself, as typos and OCR slips are), cut back to EXAMPLE_BYTES bytes."""
    chars = list(text)
    for _ in range(int(rng.integers(1, 5))):
        op, pos = int(rng.integers(3)), int(rng.integers(len(chars)))
        new = chars[int(rng.integers(len(chars)))]
        if op == 0 and new != chars[pos]:
            chars[pos] = new
        elif op == 1:
            chars.insert(pos, new)
        elif len(chars) > 1:
            del chars[pos]
    while len("".join(chars).encode("utf-8")) > EXAMPLE_BYTES:
        chars.pop()
    return "".join(chars)


def _check_one_example_each(dirt: list[dict]) -> None:
    """Raises ValueError unless every dirt record is exactly one example (whole, unchanged) when cut."""
    docs = pl.DataFrame({"doc_id": [r["id"] for r in dirt], "domain": [r["domain"] for r in dirt],
                         "source": [r["source"] for r in dirt], "text": [r["text"] for r in dirt]})
    cut = cut_examples(docs, EXAMPLE_BYTES)
    if cut.height != len(dirt) or cut["text"].to_list() != docs["text"].to_list():
        raise ValueError(f"{len(dirt)} dirt documents cut into {cut.height} examples; each must be one "
                         f"example of {EXAMPLE_BYTES // 2}..{EXAMPLE_BYTES} bytes")

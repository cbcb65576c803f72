#!/usr/bin/env python3
"""Build the embedded default corpus, grasp_pipeline/data/default_corpus.jsonl.gz.

The corpus is a gzipped JSON-lines file, one document per line:

    {"id": ..., "domain": ..., "source": ..., "license": ..., "text": ...}

It mixes nine domains of clearly different character, all taken from files that
ship inside packages, so that building needs no network beyond a package
registry and the pipeline itself never downloads anything at run time:

* seven public-domain literary works in seven languages, Project Gutenberg
  texts that the music21 wheel (BSD-3-Clause) ships as language-detection
  training data in music21/languageExcerpts/trainingData/*.txt;
* python_docs: CPython's documentation prose, pydoc_data/topics.py (PSF-2.0);
* python_source: a fixed list of pure-Python CPython stdlib modules (PSF-2.0).

Usage (music21 need not be installed; its wheel is just a zip file):

    pip download music21==10.5.1 --no-deps -d /tmp/m21
    python scripts/build_default_corpus.py \\
        --music21 /tmp/m21/music21-10.5.1-py3-none-any.whl \\
        --out grasp_pipeline/data/default_corpus.jsonl.gz

Without --music21 the script looks for an installed music21 package.  The build
is deterministic: the same inputs give a byte-identical file (fixed record
order, gzip mtime=0 and no file name in the gzip header).  The inputs are
pinned: the script refuses to build from other music21 files or another CPython
version than the ones recorded in PROVENANCE.md unless --allow-drift is given.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import re
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

# -----------------------------------------------------------------------------
# pinned inputs

MUSIC21_VERSION = "10.5.1"
PYTHON_VERSION = "3.11.7"
PART_BYTES = 16_384  # literature is cut into ~16 KB documents at paragraph breaks


@dataclass(frozen=True)
class Work:
    domain: str
    member: str  # path inside the music21 package
    slug: str  # stable document-id stem
    title: str  # human description, goes into `source`
    sha256: str  # of the file as shipped in music21 10.5.1
    drop_prefix: str | None = None  # leading non-work note to strip (transcriber credit)


WORKS = [
    Work("english_literature", "languageExcerpts/trainingData/en.txt", "austen-lady-susan",
         "Jane Austen, Lady Susan (written c. 1794, publ. 1871)",
         "4204368969adc88728ae1ff11de2a787276eea32c1ac3a2555be476d1c78d7f6"),
    Work("german_literature", "languageExcerpts/trainingData/de.txt", "goethe-faust-1",
         "Johann Wolfgang von Goethe, Faust: Der Tragoedie erster Teil (1808)",
         "352669b22a5b3af205c143faeae2ad13a5b50cb4f4dda8b875ab5da66f103bbd"),
    Work("french_literature", "languageExcerpts/trainingData/fr.txt", "voltaire-romans-1",
         "Voltaire, Oeuvres tome XXXIII, Romans tome I (ed. Beuchot, Firmin Didot, 1829)",
         "1a1ff0ef0e94a83662e6f4da4e1fac56b8d3ab3fea237efbceb5a2af56a4136d",
         drop_prefix="Nous remercions la Biblioth"),
    Work("italian_literature", "languageExcerpts/trainingData/it.txt", "dante-divina-commedia",
         "Dante Alighieri, La Divina Commedia (c. 1308-1321)",
         "b0785b2709df11d49ee52c6d119726b87e71e617e7f9a0dd90c5ce6b170ef975"),
    Work("chinese_literature", "languageExcerpts/trainingData/cn.txt", "guo-se-tian-xiang",
         "Guo Se Tian Xiang, Ming-dynasty anthology ed. Wu Jingsuo (PG title: Zhong Guo Shi Da Jin Shu Zhi)",
         "38231dbbe45ceeedb7abd03fbce2cf033fff29acfb0a46365b468cbb3afae396"),
    Work("latin_hymns", "languageExcerpts/trainingData/la.txt", "hymni-ecclesiae",
         "Hymni Ecclesiae (Macmillan, London/Oxford, 1865)",
         "dfb8b8b6d109e5aa0ed90286b1f2f64c3232a7fa00b30800f3650906195767a2"),
    Work("dutch_literature", "languageExcerpts/trainingData/nl.txt", "ribbius-acht-en-twintigtal",
         "G. Ribbius, Een acht en twintigtal voorwerpen uit de natuurlijke geschiedenis (19th c.)",
         "da8864de565666bab149cd757edfa88627e1ee5e9b8dcd5bfecb84f82987e6b6"),
]

# Pure-Python stdlib modules of varied style (parsers, numerics, text, I/O),
# about 530 KB together.  An explicit list, not a glob, so the selection is stable.
STDLIB_MODULES = [
    "json/__init__.py", "json/decoder.py", "json/encoder.py", "json/scanner.py", "json/tool.py",
    "bisect.py", "fnmatch.py", "glob.py", "string.py", "shlex.py", "csv.py", "textwrap.py",
    "base64.py", "heapq.py", "gzip.py", "calendar.py", "contextlib.py", "fractions.py",
    "tempfile.py", "random.py", "functools.py", "statistics.py", "pathlib.py",
    "collections/__init__.py",
]

LITERATURE_LICENSE = "public-domain"
PSF_LICENSE = "PSF-2.0"

# -----------------------------------------------------------------------------
# text cleaning

# Project Gutenberg start/end marker lines, in the variants these files use.
_PG_START = re.compile(r"^\s*\*{3}\s*(start of (the |this )?project gutenberg|the project gutenberg)",
                       re.IGNORECASE)
_PG_END = re.compile(r"^\s*(\*{3}\s*)?(end of (the |this )?project gutenberg|ende dieses projekt gutenberg)",
                     re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """Return `text` without Project Gutenberg header/footer lines.

    Everything up to and including a start marker and everything from an end
    marker on is dropped; the PG licence requires removing the PG name when
    redistributing the bare public-domain text, and the boilerplate is not the work.
    """
    lines = text.split("\n")
    start = 0
    for i, line in enumerate(lines[:200]):
        if _PG_START.match(line):
            start = i + 1
    end = len(lines)
    for i in range(len(lines) - 1, max(start, len(lines) - 400) - 1, -1):
        if _PG_END.match(lines[i]):
            end = i
    return "\n".join(lines[start:end])


def normalise(text: str) -> str:
    """Return `text` with LF line ends, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def drop_leading_paragraph(text: str, prefix: str) -> str:
    """Return `text` without its first paragraph if that paragraph starts with `prefix`."""
    head, _, rest = text.lstrip("\n").partition("\n\n")
    if head.startswith(prefix):
        return rest
    raise SystemExit(f"expected a leading paragraph starting with {prefix!r}; input changed?")


def cut_into_parts(text: str, part_bytes: int = PART_BYTES) -> list[str]:
    """Return `text` cut into parts of at least `part_bytes` UTF-8 bytes (the last may be shorter).

    Whole works are cut into several documents so document-level operations
    (ids, per-document tails) behave as they would on a real multi-file corpus.
    A part ends at the first paragraph break (blank line) after `part_bytes`, or
    at the first line break if no paragraph break comes soon (the Chinese text
    has no blank lines).  Newlines are ASCII, so cuts never split a character.
    """
    data = text.encode("utf-8")
    cuts, start = [0], 0
    while len(data) - start > part_bytes + part_bytes // 4:  # else the rest is the last part
        pos = data.find(b"\n\n", start + part_bytes, start + 2 * part_bytes)
        if pos < 0:
            pos = data.find(b"\n", start + part_bytes)
        if pos < 0:
            break
        start = pos + 1
        cuts.append(start)
    cuts.append(len(data))
    parts = [data[a:b].decode("utf-8").strip("\n") for a, b in zip(cuts, cuts[1:])]
    return [p + "\n" for p in parts if p.strip()]


# -----------------------------------------------------------------------------
# input locations


class Music21Files:
    """Reads files of the music21 package from a wheel (.whl) or an installed package dir."""

    def __init__(self, location: str | None):
        if location is None:
            spec = importlib.util.find_spec("music21")  # finds it without importing it (slow)
            if spec is None or not spec.submodule_search_locations:
                raise SystemExit(
                    "music21 not found: pass --music21 PATH (a music21 wheel or package dir); "
                    f"get the wheel with `pip download music21=={MUSIC21_VERSION} --no-deps -d /tmp/m21`")
            location = list(spec.submodule_search_locations)[0]
        self.path = Path(location)
        if self.path.suffix == ".whl":
            self.zip = zipfile.ZipFile(self.path)
            self.version = self.path.name.split("-")[1]
        else:
            self.zip = None
            self.version = _installed_version(self.path)

    def read(self, member: str) -> bytes:
        """Return the bytes of music21/<member>."""
        if self.zip is not None:
            return self.zip.read(f"music21/{member}")
        return (self.path / member).read_bytes()


def _installed_version(package_dir: Path) -> str:
    """Return the version in the music21-<version>.dist-info folder beside `package_dir`."""
    infos = sorted(package_dir.parent.glob("music21-*.dist-info"))
    return infos[0].name[len("music21-"):-len(".dist-info")] if infos else "unknown"


# -----------------------------------------------------------------------------
# record builders


def literature_records(m21: Music21Files, allow_drift: bool) -> list[dict]:
    """Return the literature documents: each work cleaned and cut into parts."""
    records = []
    for work in WORKS:
        raw = m21.read(work.member)
        digest = hashlib.sha256(raw).hexdigest()
        if digest != work.sha256:
            _drift(f"music21/{work.member} has sha256 {digest}, expected {work.sha256}", allow_drift)
        text = normalise(strip_gutenberg(raw.decode("utf-8")))
        if work.drop_prefix:
            text = normalise(drop_leading_paragraph(text, work.drop_prefix))
        # guard: boilerplate must really be gone, the work must really be there
        assert "gutenberg" not in text.lower(), work.member
        assert len(text) > 50_000, work.member
        for k, part in enumerate(cut_into_parts(text)):
            records.append({
                "id": f"{work.domain}/{work.slug}/part-{k:03d}",
                "domain": work.domain,
                "source": f"music21=={m21.version}:music21/{work.member} (Project Gutenberg text: {work.title})",
                "license": LITERATURE_LICENSE,
                "text": part,
            })
    return records


def python_docs_records() -> list[dict]:
    """Return one document per pydoc topic of the running interpreter, topics sorted."""
    from pydoc_data.topics import topics
    version = _python_version()
    return [{
        "id": f"python_docs/{name}",
        "domain": "python_docs",
        "source": f"CPython {version} stdlib:pydoc_data/topics.py topics[{name!r}]",
        "license": PSF_LICENSE,
        "text": normalise(topics[name]),
    } for name in sorted(topics)]


def python_source_records() -> list[dict]:
    """Return one document per module in STDLIB_MODULES, read verbatim from the stdlib."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    version = _python_version()
    records = []
    for rel in STDLIB_MODULES:
        text = (stdlib / rel).read_bytes().decode("utf-8")
        records.append({
            "id": f"python_source/{rel}",
            "domain": "python_source",
            "source": f"CPython {version} stdlib:{rel}",
            "license": PSF_LICENSE,
            "text": text.replace("\r\n", "\n"),
        })
    return records


def _python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def _drift(message: str, allow_drift: bool) -> None:
    if not allow_drift:
        raise SystemExit(f"input drift: {message}\n"
                         "The build would not reproduce the committed corpus; "
                         "rerun with --allow-drift to build anyway and update PROVENANCE.md.")
    print(f"warning: {message}", file=sys.stderr)


def build(m21: Music21Files, allow_drift: bool = False) -> bytes:
    """Return the gzipped JSONL bytes of the whole corpus (deterministic)."""
    if m21.version != MUSIC21_VERSION:
        _drift(f"music21 {m21.version}, expected {MUSIC21_VERSION}", allow_drift)
    if _python_version() != PYTHON_VERSION:
        _drift(f"CPython {_python_version()}, expected {PYTHON_VERSION}", allow_drift)
    records = literature_records(m21, allow_drift) + python_docs_records() + python_source_records()
    records.sort(key=lambda r: (r["domain"], r["id"]))
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "duplicate document ids"
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    # mtime=0 and gzip.compress (no file name in the header) keep the output byte-identical
    return gzip.compress(lines.encode("utf-8"), compresslevel=9, mtime=0)


def summarise(records: list[dict]) -> str:
    """Return a Markdown table of documents and UTF-8 bytes per domain."""
    stats: dict[str, list[int]] = {}
    for r in records:
        s = stats.setdefault(r["domain"], [0, 0])
        s[0] += 1
        s[1] += len(r["text"].encode("utf-8"))
    rows = ["| domain | documents | text bytes |", "| --- | ---: | ---: |"]
    rows += [f"| {d} | {n} | {b:,} |" for d, (n, b) in sorted(stats.items())]
    total_docs = sum(n for n, _ in stats.values())
    total_bytes = sum(b for _, b in stats.values())
    rows.append(f"| **total** | {total_docs} | {total_bytes:,} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("grasp_pipeline/data/default_corpus.jsonl.gz"),
                        help="where to write the gzipped JSONL corpus")
    parser.add_argument("--music21", default=None,
                        help="music21 wheel (.whl) or installed package directory; default: installed music21")
    parser.add_argument("--allow-drift", action="store_true",
                        help="build even if music21 files or the CPython version differ from the pinned ones")
    args = parser.parse_args(argv)

    data = build(Music21Files(args.music21), allow_drift=args.allow_drift)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    records = [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines()]
    print(summarise(records))
    print(f"\nwrote {args.out} ({len(data):,} bytes gzipped, sha256 {hashlib.sha256(data).hexdigest()})")


if __name__ == "__main__":
    main()

"""Which files a corpus path means: a file, a directory (recursively) or a glob, local or on object storage.

Hostile trees are refused by name rather than followed: a file name that is not valid
UTF-8, a symbolic link whose target lies outside the corpus root. Each file is read once,
whatever links lead to it (a `loop -> ..` link does not multiply the corpus). A location
with a scheme (`s3://bucket/corpus/*.parquet`, also `gs://`, `az://`) is listed through
`grasp_pipeline.infra.objectstore` with the storage options of the tables (environment only).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..infra.objectstore import ObjectLocation
from ..infra.storage import storage_options_from_env
from .errors import CorpusError

# .arrow: the shards of a Hugging Face dataset saved with `save_to_disk` (data-00000-of-00001.arrow)
SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".arrow")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class CorpusFile:
    """One corpus file: `location` (a local path or a URI, as messages show it) and `source`, its
    path relative to the corpus root (the default `source` column and document id prefix)."""

    location: str
    source: str
    storage_options: dict = field(default_factory=dict, repr=False, compare=False)  # may hold secrets

    @property
    def name(self) -> str:
        return self.location.rsplit("/", 1)[-1]

    @property
    def is_remote(self) -> bool:
        return "://" in self.location

    def __str__(self) -> str:
        return self.location

    def size(self) -> int:
        """The file's size in bytes (as stored, before any decompression)."""
        if not self.is_remote:
            return os.path.getsize(self.location)
        folder, name = self.location.rsplit("/", 1)
        return ObjectLocation(folder, self.storage_options).size(name)

    def open(self):
        """A binary stream of the file's stored bytes."""
        if not self.is_remote:
            return open(self.location, "rb")
        folder, name = self.location.rsplit("/", 1)
        return ObjectLocation(folder, self.storage_options).open(name)


def resolve_input(path: str | Path) -> list[CorpusFile]:
    """Returns the files to read, in sorted order, for a file, directory or glob (local or a URI)."""
    if "://" in str(path) and not str(path).startswith("file://"):
        return _resolve_remote(str(path))
    p = Path(str(path).removeprefix("file://")).expanduser()
    _check_name(p)
    if p.is_file():
        if not is_supported(p):
            raise CorpusError(f"{p}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
        return [CorpusFile(str(p), p.name)]
    if p.is_dir():
        files = _walk(p)
        if not files:
            raise CorpusError(f"directory {p} contains no {', '.join('*' + s for s in SUPPORTED_SUFFIXES)} "
                              "files; put corpus files there or pass a file or glob instead.")
        return files
    if _GLOB_CHARS.search(str(path)):
        root, pattern = _split_glob(p.parts)
        files = [f for f in (_walk(root) if root.is_dir() else []) if glob_matches(pattern, f.source)]
        if not files:
            raise CorpusError(f"glob {str(path)!r} matches no {', '.join(SUPPORTED_SUFFIXES)} files; "
                              "check the pattern and the current directory.")
        return files
    raise CorpusError(f"corpus path {str(path)!r} matches nothing: no such file or directory "
                      "(and it is not a glob pattern). Check the path, or pass None for the default corpus.")


# what `datasets` writes beside a dataset's shards: its metadata, and cache-*.arrow files (derived data)
_DATASET_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_supported(f) -> bool:
    name = str(f).rsplit("/", 1)[-1]
    return name.endswith(SUPPORTED_SUFFIXES) and name not in _DATASET_FILES and not (
        name.startswith("cache-") and name.endswith(".arrow"))


def _check_name(path: Path) -> None:
    """Refuses a path that cannot be stored as UTF-8 text (undecodable bytes in a file name)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise CorpusError(f"{shown}: the file name is not valid UTF-8 (the \\x escapes are its undecodable bytes); "
                          "rename the file (e.g. `convmv -f latin1 -t utf8`) or move it out of the corpus.") from None


def _walk(root: Path) -> list[CorpusFile]:
    """Every supported, non-hidden file under `root`, each real file once, sorted by relative path.

    Symbolic links are checked, not trusted: one whose target is outside `root` is an error
    naming it; one inside is skipped when it leads to a directory (its files are reached where
    they are) and deduplicated when it leads to a file already listed.
    """
    real_root = root.resolve()
    found: dict[Path, CorpusFile] = {}
    for entry in sorted(root.rglob("*"), key=lambda f: f.relative_to(root).as_posix()):
        relative = entry.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        _check_name(entry)
        if entry.is_symlink():
            target = entry.resolve()
            if not target.is_relative_to(real_root):
                raise CorpusError(f"{entry}: a symbolic link to {target}, outside the corpus root {root}; "
                                  "copy the file into the corpus, or pass its own path.")
            if target.is_dir():
                continue
        if not entry.is_file() or not is_supported(entry):
            continue
        found.setdefault(entry.resolve(), CorpusFile(str(entry), relative.as_posix()))
    return sorted(found.values(), key=lambda f: f.source)


def _split_glob(parts) -> tuple[Path, str]:
    """(the longest leading folder without glob characters, the rest of the pattern)."""
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
    return (Path(*parts[:fixed]) if fixed else Path(".")), "/".join(parts[fixed:])


def glob_matches(pattern: str, relative: str) -> bool:
    """Whether a relative path matches a glob: `*`, `?`, `[…]` within one folder, `**` across folders;
    like `glob`, wildcards do not match names starting with '.'."""
    return _match(pattern.split("/"), relative.split("/"))


def _match(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1)
                   if not any(p.startswith(".") for p in parts[:i]))
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match(rest, parts[1:])


def _resolve_remote(uri: str) -> list[CorpusFile]:
    """The files an object-store file, folder or glob names, listed once."""
    scheme, rest = uri.split("://", 1)
    parts = rest.split("/")
    fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
    if fixed == 0:
        raise CorpusError(f"corpus location {uri!r}: the bucket name cannot be a pattern")
    base = f"{scheme}://{'/'.join(parts[:fixed])}".rstrip("/")
    options = storage_options_from_env(base)
    pattern = "/".join(parts[fixed:])
    try:
        listed = ObjectLocation(base, options).list()
    except Exception as error:  # the store names what is wrong (no bucket, no credentials)
        raise CorpusError(f"corpus location {uri!r}: cannot list it ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not pattern:  # a file, or a folder (everything under it)
        folder, name = base.rsplit("/", 1)
        if any(n == name for n, _ in ObjectLocation(folder, options).list()) and is_supported(name):
            return [CorpusFile(base, name, options)]
        pattern = "**/*"
    files = [CorpusFile(f"{base}/{name}", name, options) for name, _ in listed
             if is_supported(name) and glob_matches(pattern, name)]
    if not files:
        raise CorpusError(f"corpus location {uri!r} matches no {', '.join(SUPPORTED_SUFFIXES)} objects "
                          f"({len(listed)} other objects under {base}); check the pattern and the bucket.")
    return files

"""Which files a corpus path means: a file, a directory (recursively) or a glob."""

from __future__ import annotations

import glob
import re
from pathlib import Path

from .errors import CorpusError


SUPPORTED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
_GLOB_CHARS = re.compile(r"[*?\[]")


def resolve_input(path: str | Path) -> tuple[list[Path], Path]:
    """Return (files to read, root that `source` is relative to) for a file, directory or glob."""
    p = Path(path).expanduser()
    if p.is_file():
        if not is_supported(p):
            raise CorpusError(f"{p}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
        return [p], p.parent
    if p.is_dir():
        files = sorted((f for f in p.rglob("*") if f.is_file() and is_supported(f)
                        and not any(part.startswith(".") for part in f.relative_to(p).parts)),
                       key=lambda f: f.relative_to(p).as_posix())
        if not files:
            raise CorpusError(f"directory {p} contains no {', '.join('*' + s for s in SUPPORTED_SUFFIXES)} "
                              "files; put corpus files there or pass a file or glob instead.")
        return files, p
    if _GLOB_CHARS.search(str(path)):
        matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
        files = [m for m in matches if m.is_file() and is_supported(m)]
        if not files:
            raise CorpusError(f"glob {str(path)!r} matches no {', '.join(SUPPORTED_SUFFIXES)} files"
                              f"{f' (it matched {len(matches)} other paths)' if matches else ''}; "
                              "check the pattern and the current directory.")
        # the root is the longest leading part of the pattern without glob characters
        parts = p.parts
        fixed = next((i for i, part in enumerate(parts) if _GLOB_CHARS.search(part)), len(parts))
        return files, Path(*parts[:fixed]) if fixed else Path(".")
    raise CorpusError(f"corpus path {str(path)!r} matches nothing: no such file or directory "
                      "(and it is not a glob pattern). Check the path, or pass None for the default corpus.")


def is_supported(f: Path) -> bool:
    return f.name.endswith(SUPPORTED_SUFFIXES)

"""Where a corpus keeps its text, domain and id: column names (nested keys as `metadata.source`) and a
path pattern the domain may come from instead (`{domain}/*.jsonl`, Hive partitions `lang={domain}/**`).

A corpus is read as it is, not reshaped: `[corpus] text_field`, `domain_field` and `id_field` name
the record fields (JSON) or columns (Parquet, Arrow) the readers take; a dotted name is looked up
as written first, then as a path into nested objects (structs in Parquet). `domain_from_path`, when
set, takes every record's domain from its file's path relative to the corpus root; a Hive
partition segment `<domain_field>=value` in that path also supplies the domain of records that lack
the field, as Hive-partitioned datasets store that column only in their folder names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import CorpusError


@dataclass(frozen=True)
class CorpusMapping:
    text_field: str = "text"
    domain_field: str = "domain"
    id_field: str = "id"
    domain_from_path: str = ""  # a pattern with one {domain}, matched against the path under the corpus root

    @classmethod
    def from_params(cls, params) -> CorpusMapping:
        """The mapping of a CorpusParams."""
        return cls(params.text_field, params.domain_field, params.id_field, params.domain_from_path)

    def __post_init__(self):
        for name in ("text_field", "domain_field", "id_field"):
            value = getattr(self, name)
            if not value or value.startswith(".") or value.endswith(".") or ".." in value:
                raise CorpusError(f"corpus.{name} = {value!r}: a field name, or dotted keys into nested "
                                  "objects such as 'metadata.source'.")
        if self.domain_from_path and self.domain_from_path.count("{domain}") != 1:
            raise CorpusError(f"corpus.domain_from_path = {self.domain_from_path!r}: the pattern needs exactly "
                              "one '{domain}', e.g. '{domain}/*.jsonl' or 'lang={domain}/**'.")

    def path_domain(self, relative: str, location: str) -> str | None:
        """The domain `relative` (a file's path under the corpus root) gives: by `domain_from_path`
        (a CorpusError naming the file when it does not match), else by a Hive segment
        `<domain_field>=value`, else None."""
        if self.domain_from_path:
            found = _pattern_regex(self.domain_from_path).fullmatch(relative)
            if found is None:
                raise CorpusError(f"{location}: its path under the corpus root, {relative!r}, does not match "
                                  f"corpus.domain_from_path = {self.domain_from_path!r}; fix the pattern "
                                  "(paths are relative to the corpus folder or to a glob's fixed part).")
            return found["domain"]
        key = f"{self.domain_field}="
        hive = [part[len(key):] for part in relative.split("/")[:-1] if part.startswith(key)]
        return hive[-1] if hive else None


def _pattern_regex(pattern: str) -> re.Pattern:
    """A regex for a path pattern: {domain} one folder name or part of one, `**` any folders,
    `*` and `?` within one folder name."""
    out = []
    for token in re.split(r"(\{domain\}|\*\*/|\*\*|\*|\?)", pattern):
        out.append({"{domain}": r"(?P<domain>[^/]+?)", "**/": r"(?:[^/]+/)*", "**": r".*", "*": r"[^/]*",
                    "?": r"[^/]"}.get(token, re.escape(token)))
    return re.compile("".join(out))


def lookup(record: dict, name: str):
    """(True, value) of field `name` in a JSON record (as written, else dotted keys into nested
    objects), or (False, None) when absent."""
    if name in record:
        return True, record[name]
    value = record
    for key in name.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value

"""`doc`: a dataclass field with help text and its valid range, the one way every setting is declared.

Every parameter dataclass of the library (stage settings in `grasp_pipeline.config`, each
workload's hyper-parameters in `grasp_pipeline.workloads`) declares its fields with `doc`,
so the CLI, config files and the Dagster launchpad show the same names, defaults and help,
and `grasp_pipeline.config.validation` checks every value against the same declaration.
This module imports nothing from the project, so any module may use it.

Range keywords (all optional; for tuple fields they apply to every element, for dict fields
to every value): `minimum` / `maximum` (inclusive), `above` / `below` (exclusive), `choices`
(the allowed values), `nonempty` (a tuple needs an element), `finite` (default True: NaN
and ±inf are refused for float fields).
"""

from __future__ import annotations

from dataclasses import field


def doc(text: str, default=None, *, minimum=None, maximum=None, above=None, below=None, choices=None,
        nonempty: bool = False, finite: bool = True, **kwargs):
    """Returns a dataclass field with `default` (or `default_factory=`), help text and its valid range."""
    valid = {"minimum": minimum, "maximum": maximum, "above": above, "below": below,
             "choices": tuple(choices) if choices is not None else None, "nonempty": nonempty or None,
             "finite": finite}
    metadata = {"help": text, "valid": {k: v for k, v in valid.items() if v is not None}}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata)


def help_text(dataclass_field) -> str:
    """The help text of a field declared with `doc` ("" for a plain field)."""
    return dataclass_field.metadata.get("help", "")


def valid_range(dataclass_field) -> dict:
    """The range keywords a field was declared with ({} for a plain field)."""
    return dict(dataclass_field.metadata.get("valid", {}))


def describe_range(valid: dict) -> str:
    """The range as a user reads it, e.g. "a number in (0, 1]", "one of ['adam', 'sgd']", "an integer ≥ 1"."""
    if "choices" in valid:
        return f"one of {list(valid['choices'])}"
    low = f"[{valid['minimum']}" if "minimum" in valid else f"({valid['above']}" if "above" in valid else None
    high = f"{valid['maximum']}]" if "maximum" in valid else f"{valid['below']})" if "below" in valid else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f"{'≥' if low[0] == '[' else '>'} {low[1:]}"
    if high:
        return f"{'≤' if high[-1] == ']' else '<'} {high[:-1]}"
    return "any value of its type"

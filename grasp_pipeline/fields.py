"""`doc`: a dataclass field with help text, the one way every setting is declared.

Every parameter dataclass of the library (stage settings in `grasp_pipeline.config`, each
workload's hyper-parameters in `grasp_pipeline.workloads`) declares its fields with `doc`,
so the CLI, config files and the Dagster launchpad show the same names, defaults and help.
This module imports nothing from the project, so any module may use it.
"""

from __future__ import annotations

from dataclasses import field


def doc(text: str, default=None, **kwargs):
    """Returns a dataclass field with `default` (or `default_factory=`) and help text."""
    if "default_factory" in kwargs:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text})


def help_text(dataclass_field) -> str:
    """The help text of a field declared with `doc` ("" for a plain field)."""
    return dataclass_field.metadata.get("help", "")

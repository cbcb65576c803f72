"""Launchpad configs generated from the library's parameter dataclasses.

The library's frozen dataclasses are the single source of field names, types, defaults and
help text; each becomes a `dagster.Config` (pydantic) class here, so the UI launchpad shows
the same settings as `grasp run --config` and the two can never drift apart.
"""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
from pydantic import Field, create_model

from grasp_pipeline.config import (CorpusParams, MixtureParams, PlanParams, ReferenceParams, RetrainParams,
                                   SelectionParams, SketchParams, SurrogateParams, TargetParams, TestParams,
                                   LoopParams, ValidationParams)
from grasp_pipeline.config.validation import validate_section


def _launchpad_type(annotation):
    """Tuples become lists: Dagster config has lists, not tuples."""
    if typing.get_origin(annotation) is tuple:
        return list[typing.get_args(annotation)[0]]
    return annotation


def config_from_params(params_cls, name: str, base=dg.Config):
    """Returns a pydantic/Dagster class with `params_cls`'s fields, defaults and help text."""
    hints = typing.get_type_hints(params_cls)
    defaults = params_cls()
    fields = {}
    for f in dataclasses.fields(params_cls):
        default = getattr(defaults, f.name)
        if isinstance(default, tuple):
            default = list(default)
        fields[f.name] = (_launchpad_type(hints[f.name]),
                          Field(default=default, description=f.metadata.get("help") or None))
    model = create_model(name, __base__=base, **fields)
    model.__doc__ = (params_cls.__doc__ or "").strip() or f"Settings of {params_cls.__name__}."
    model.params_cls = params_cls
    return model


def to_params(config):
    """Returns the library dataclass instance for a generated Config instance, every setting
    checked (a SettingError names section.field, the value and the valid range) before the
    asset touches a table."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model_dump().items()}
    return validate_section(config.params_cls(**values))


CorpusConfig = config_from_params(CorpusParams, "CorpusConfig")
ReferenceConfig = config_from_params(ReferenceParams, "ReferenceConfig")
SketchConfig = config_from_params(SketchParams, "SketchConfig")
PlanConfig = config_from_params(PlanParams, "PlanConfig")
RetrainConfig = config_from_params(RetrainParams, "RetrainConfig")
SurrogateConfig = config_from_params(SurrogateParams, "SurrogateConfig")
SelectionConfig = config_from_params(SelectionParams, "SelectionConfig")
MixtureConfig = config_from_params(MixtureParams, "MixtureConfig")
ValidationConfig = config_from_params(ValidationParams, "ValidationConfig")
TestConfig = config_from_params(TestParams, "TestConfig")
LoopConfig = config_from_params(LoopParams, "LoopConfig")
TargetConfig = config_from_params(TargetParams, "TargetConfig")

"""Launchpad configs generated from the library's parameter dataclasses.

The library's frozen dataclasses are the single source of field names, types, defaults and
help text; each becomes a `dagster.Config` (pydantic) class here, so the UI launchpad shows
the same settings as `grasp run --config` and the two can never drift apart.

Their defaults are the parameters of GRASP_PROFILE and GRASP_CONFIG (assets/env.py) when the
code location loads, the `demo` profile if neither is set: runs launched with no run config
(declarative automation, a launchpad left at its defaults) use the deployment's profile.
"""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
from pydantic import Field, create_model

from grasp_pipeline.config import (
    CorpusParams,
    ExportParams,
    LoopParams,
    MaintenanceParams,
    MixtureParams,
    MixtureUpdateParams,
    PipelineParams,
    PlanParams,
    ReferenceParams,
    RetrainParams,
    SelectionParams,
    SketchParams,
    SurrogateParams,
    TargetParams,
    TestParams,
    ValidationParams,
)
from grasp_pipeline.config.validation import validate_section

from . import env


def _launchpad_type(annotation):
    """Tuples become lists: Dagster config has lists, not tuples."""
    if typing.get_origin(annotation) is tuple:
        return list[typing.get_args(annotation)[0]]
    return annotation


def launchpad_defaults() -> PipelineParams:
    """The parameters config defaults come from: GRASP_PROFILE, then GRASP_CONFIG's overrides."""
    return env.pipeline_params()


def config_from_params(params_cls, name: str, base=dg.Config, defaults=None):
    """Returns a pydantic/Dagster class with `params_cls`'s fields and help text, and the values
    of `defaults` (an instance; default: `params_cls()`) as its defaults."""
    hints = typing.get_type_hints(params_cls)
    defaults = params_cls() if defaults is None else defaults
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


_defaults = launchpad_defaults()
CorpusConfig = config_from_params(CorpusParams, "CorpusConfig", defaults=_defaults.corpus)
ReferenceConfig = config_from_params(ReferenceParams, "ReferenceConfig", defaults=_defaults.reference)
SketchConfig = config_from_params(SketchParams, "SketchConfig", defaults=_defaults.sketch)
PlanConfig = config_from_params(PlanParams, "PlanConfig", defaults=_defaults.plan)
RetrainConfig = config_from_params(RetrainParams, "RetrainConfig", defaults=_defaults.retrain)
SurrogateConfig = config_from_params(SurrogateParams, "SurrogateConfig", defaults=_defaults.surrogate)
SelectionConfig = config_from_params(SelectionParams, "SelectionConfig", defaults=_defaults.selection)
MixtureConfig = config_from_params(MixtureParams, "MixtureConfig", defaults=_defaults.mixture)
MixtureUpdateConfig = config_from_params(MixtureUpdateParams, "MixtureUpdateConfig", defaults=_defaults.mixture_update)
ValidationConfig = config_from_params(ValidationParams, "ValidationConfig", defaults=_defaults.validation)
TestConfig = config_from_params(TestParams, "TestConfig", defaults=_defaults.test)
LoopConfig = config_from_params(LoopParams, "LoopConfig", defaults=_defaults.loop)
TargetConfig = config_from_params(TargetParams, "TargetConfig", defaults=_defaults.target)
ExportConfig = config_from_params(ExportParams, "ExportConfig", defaults=_defaults.export)
MaintenanceConfig = config_from_params(MaintenanceParams, "MaintenanceConfig", defaults=_defaults.maintenance)

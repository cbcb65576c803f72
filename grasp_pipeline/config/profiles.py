"""Run profiles: all stage parameters of one run, the `demo` and `smoke` bounds, overrides.

Defaults are the `demo` profile; `smoke` shrinks every bound that drives cost. Profiles
bound the work (pool examples per domain, subsets, steps), so a run's time does not grow
with the corpus it is pointed at; `--config FILE` overrides any field.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from .params import (
    CorpusParams,
    ExportParams,
    LoopParams,
    MaintenanceParams,
    MixtureParams,
    MixtureUpdateParams,
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
from .validation import validate
from .workload import WorkloadParams


@dataclass(frozen=True)
class PipelineParams:
    """All stage parameters of one run."""

    workload: WorkloadParams = field(default_factory=WorkloadParams)
    corpus: CorpusParams = field(default_factory=CorpusParams)
    reference: ReferenceParams = field(default_factory=ReferenceParams)
    sketch: SketchParams = field(default_factory=SketchParams)
    plan: PlanParams = field(default_factory=PlanParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)
    surrogate: SurrogateParams = field(default_factory=SurrogateParams)
    selection: SelectionParams = field(default_factory=SelectionParams)
    mixture: MixtureParams = field(default_factory=MixtureParams)
    mixture_update: MixtureUpdateParams = field(default_factory=MixtureUpdateParams)
    loop: LoopParams = field(default_factory=LoopParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    test: TestParams = field(default_factory=TestParams)
    target: TargetParams = field(default_factory=TargetParams)
    export: ExportParams = field(default_factory=ExportParams)
    maintenance: MaintenanceParams = field(default_factory=MaintenanceParams)

    def target_workload(self) -> WorkloadParams:
        """The workload settings of the target check: this run's, with `target.workload` applied."""
        try:
            overrides = json.loads(self.target.workload)
        except json.JSONDecodeError as error:
            raise ValueError(f"target.workload must be a JSON object of workload settings, got "
                             f"{self.target.workload!r} ({error})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"target.workload must be a JSON object, got {self.target.workload!r}")
        return _apply(self.workload, overrides)


PROFILES: dict[str, dict] = {
    "demo": {},
    "smoke": {
        "corpus": {"task_examples_per_domain": 32, "pool_examples_per_domain": 120, "shard_size": 64},
        "reference": {"warmup_examples": 300, "steps": 30, "sketch_steps": [10, 20, 30]},
        "sketch": {"k": 64},
        "plan": {"uniform_fit": 20, "uniform_holdout": 10, "dirichlet_fit": 20, "dirichlet_holdout": 10,
                 "stratified_fit": 10, "stratified_holdout": 10},
        "retrain": {"steps": 30, "repeats": 1},
        "surrogate": {"grasp_normalisations": ["none", "mean"], "datamodel_ridges": [1.0, 10.0]},
    },
}


def _apply(section, overrides: dict):
    valid = {f.name for f in fields(section)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} for {type(section).__name__}; "
                         f"valid: {sorted(valid)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(section, **converted)


def with_overrides(params: PipelineParams, overrides: dict) -> PipelineParams:
    """Returns params with {section: {field: value}} overrides applied, every setting checked
    (`validation.validate`: a SettingError names section.field, the value and the valid range)."""
    sections = {f.name for f in fields(PipelineParams)}
    unknown = set(overrides) - sections
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(sections)}")
    for name, values in overrides.items():
        if not isinstance(values, dict):
            raise ValueError(f"config section [{name}] must be a table of {{field: value}}, got {values!r}")
    return validate(replace(params, **{name: _apply(getattr(params, name), values)
                                       for name, values in overrides.items()}))


def load_params(profile: str = "demo", config_file: str | Path | None = None) -> PipelineParams:
    """Returns the profile's parameters, then the overrides of a JSON or TOML file."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    params = with_overrides(PipelineParams(), PROFILES[profile])
    if config_file:
        path = Path(config_file)
        text = path.read_text()
        try:
            overrides = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"config file {path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} "
                             f"({error})") from None
        if not isinstance(overrides, dict):
            raise ValueError(f"config file {path}: must hold {{section: {{field: value}}}}, got {overrides!r}")
        params = with_overrides(params, overrides)
    return validate(params)

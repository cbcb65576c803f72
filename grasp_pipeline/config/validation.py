"""Every setting checked when it is read: its type and the range its `doc` declaration gives.

`validate(params)` checks a whole `PipelineParams` (the CLI and config files, through
`load_params` / `with_overrides`); `validate_section(params, section)` one stage's settings
(the Dagster launchpad, through `assets.config.to_params`). Both run before any stage, so a
bad value never reaches a table. A `SettingError` names `section.field`, the value and the
valid range, e.g. ``selection.budget_fraction = nan: must be a finite number in (0, 1]``.

New fields get their check by declaring a range in `doc(...)`; rules that tie two fields
together are the `_SECTION_RULES` / `_PIPELINE_RULES` below.
"""

from __future__ import annotations

import dataclasses
import math
import string
import typing

from ..infra.fields import describe_range, valid_range


class SettingError(ValueError):
    """A setting has the wrong type or is outside its valid range; nothing was run or written."""


def validate(params):
    """Returns `params` (a PipelineParams) after checking every section and the rules across sections."""
    for f in dataclasses.fields(params):
        validate_section(getattr(params, f.name), f.name)
    for rule in _PIPELINE_RULES:
        rule(params)
    return params


def validate_section(section_params, section: str | None = None):
    """Returns `section_params` (one stage's dataclass) after checking each field and the section's rules."""
    section = section or section_name(type(section_params))
    hints = typing.get_type_hints(type(section_params))
    for f in dataclasses.fields(section_params):
        check_value(f"{section}.{f.name}", hints[f.name], getattr(section_params, f.name), valid_range(f))
    for rule in _SECTION_RULES.get(section, ()):
        rule(section_params)
    return section_params


def section_name(params_cls) -> str:
    """The config section a parameter dataclass is read from: SelectionParams → "selection" (every
    section of PipelineParams is named after its class)."""
    return params_cls.__name__.removesuffix("Params").lower()


def check_value(where: str, annotation, value, valid: dict) -> None:
    """Raises SettingError naming `where` unless `value` has the annotated type and lies in `valid`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise _error(where, value, f"must be a list of {_type_name(args[0])}")
        if valid.get("nonempty") and not value:
            raise _error(where, value, "must list at least one value")
        for i, item in enumerate(value):
            _check_scalar(f"{where}[{i}]", args[0], item, valid)
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(where, value, "must be a table of {name: number}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise _error(where, value, f"keys must be names (strings), got {key!r}")
            _check_scalar(f"{where}.{key}", args[1], item, valid)
        return
    _check_scalar(where, annotation, value, valid)


def _check_scalar(where: str, annotation, value, valid: dict) -> None:
    if annotation is bool:
        if not isinstance(value, bool):
            raise _error(where, value, "must be true or false")
        return
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(where, value, f"must be an integer{_range_suffix(valid)}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(where, value, f"must be a number{_range_suffix(valid)}")
        if valid.get("finite", True) and not math.isfinite(value):
            raise _error(where, value, f"must be a finite number{_range_suffix(valid)}")
    elif annotation is str:
        if not isinstance(value, str):
            raise _error(where, value, "must be a string" + (f", {describe_range(valid)}" if valid.get("choices")
                                                             else ""))
    if not _in_range(value, valid):
        raise _error(where, value, f"is out of range: valid values are {describe_range(valid)}")


def _in_range(value, valid: dict) -> bool:
    if "choices" in valid:
        return value in valid["choices"]
    if isinstance(value, str):
        return True
    return not (("minimum" in valid and value < valid["minimum"]) or ("maximum" in valid and value > valid["maximum"])
                or ("above" in valid and value <= valid["above"]) or ("below" in valid and value >= valid["below"]))


def _range_suffix(valid: dict) -> str:
    described = describe_range(valid)
    return "" if described == "any value of its type" else f" {described}"


def _type_name(annotation) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(annotation, str(annotation))


def _error(where: str, value, problem: str) -> SettingError:
    return SettingError(f"{where} = {value!r}: {problem}")


# ------------------------------------------------------------------ rules tying fields together

def _sketch_steps_within_warm_up(reference) -> None:
    steps = list(reference.sketch_steps)
    if len(set(steps)) != len(steps) or any(s > reference.steps for s in steps):
        raise SettingError(f"reference.sketch_steps = {steps}: must be distinct steps in 0..{reference.steps} "
                           "(reference.steps)")


def _dirichlet_sizes_ordered(plan) -> None:
    if plan.dirichlet_min_fraction > plan.dirichlet_max_fraction:
        raise SettingError(f"plan.dirichlet_min_fraction = {plan.dirichlet_min_fraction!r}: must be at most "
                           f"plan.dirichlet_max_fraction = {plan.dirichlet_max_fraction!r}")


def _enough_fit_subsets_for_the_folds(params) -> None:
    fit = params.plan.uniform_fit + params.plan.dirichlet_fit
    if fit < params.surrogate.cv_folds:
        raise SettingError(f"surrogate.cv_folds = {params.surrogate.cv_folds}: must be at most the number of fit "
                           f"subsets, plan.uniform_fit + plan.dirichlet_fit = {fit}")


def _one_budget(params) -> None:
    """The loop's candidates are built at loop.budget_fraction; curation and mixture take the loop's pick
    only at their own budget, so a different one there would quietly leave `grasp` out of their tables."""
    for section in ("selection", "mixture"):
        value = getattr(params, section).budget_fraction
        if value != params.loop.budget_fraction:
            raise SettingError(f"{section}.budget_fraction = {value!r}: must equal loop.budget_fraction = "
                               f"{params.loop.budget_fraction!r} (the closed loop picks `grasp` at that budget; "
                               "set all three budget_fraction fields to one value)")


def _megatron_prefix_names_only_the_domain(export) -> None:
    """The prefix is filled with str.format(domain=…, source=…): any other field would be a KeyError at
    export time."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(export.megatron_prefix) if name is not None]
    except ValueError as error:  # an unmatched brace
        raise _error("export.megatron_prefix", export.megatron_prefix, f"is not a format string ({error})") from None
    if any(name not in ("domain", "source") for name in fields):
        raise _error("export.megatron_prefix", export.megatron_prefix,
                     "may name only {domain} and {source} (write a literal brace as {{ or }})")


def _known_workload(workload) -> None:
    from ..workloads.registry import WORKLOADS

    if workload.name not in WORKLOADS:
        raise SettingError(f"workload.name = {workload.name!r}: valid values are one of {sorted(WORKLOADS)}")


_SECTION_RULES = {"reference": (_sketch_steps_within_warm_up,), "plan": (_dirichlet_sizes_ordered,),
                  "workload": (_known_workload,), "export": (_megatron_prefix_names_only_the_domain,)}
_PIPELINE_RULES = (_enough_fit_subsets_for_the_folds, _one_budget)

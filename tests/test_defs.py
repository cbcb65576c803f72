"""The code location loads, and its launchpad configs mirror the library's parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import dagster as dg
import pytest

from assets import config as launchpad
from assets.definitions import defs


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    for job in ("grasp_prepare", "grasp_retrain", "grasp_fit_and_curate", "grasp_reoptimise_mixture"):
        assert defs.resolve_job_def(job).name == job


def test_every_asset_declares_a_code_version_and_a_description():
    for assets_def in defs.resolve_all_asset_specs():
        assert assets_def.code_version, assets_def.key
        assert assets_def.description, assets_def.key


@pytest.mark.parametrize("config_cls", [launchpad.CorpusConfig, launchpad.ReferenceConfig, launchpad.SketchConfig,
                                        launchpad.PlanConfig, launchpad.RetrainConfig, launchpad.SurrogateConfig,
                                        launchpad.SelectionConfig, launchpad.MixtureConfig,
                                        launchpad.ValidationConfig])
def test_launchpad_config_defaults_equal_library_defaults(config_cls):
    params_cls = config_cls.params_cls
    assert set(config_cls.model_fields) == {f.name for f in dataclasses.fields(params_cls)}
    assert launchpad.to_params(config_cls()) == params_cls()


def test_workspace_file_loads_the_code_location(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).parents[1]
    dagster_cli = Path(sys.executable).with_name("dagster")
    completed = subprocess.run([str(dagster_cli), "definitions", "validate", "-w", "workspace.yaml"],
                               cwd=repo, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stdout + completed.stderr


# ---------------------------------------------------------------- the graph, as a visible diff

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def graph_snapshot(definitions: dg.Definitions) -> dict:
    """Asset keys with their deps, groups, partitions and code versions; jobs, schedules, sensors, checks."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name, "code_version": node.code_version,
            "partitions": getattr(node.partitions_def, "name", None) if node.partitions_def else None,
            "pools": sorted(node.pools or [])}
    jobs = {}
    for job in sorted(definitions.jobs, key=lambda j: j.name):
        resolved = definitions.resolve_job_def(job.name)
        assets_of = sorted(k.to_user_string() for k in resolved.asset_layer.selected_asset_keys)
        jobs[job.name] = {"assets": assets_of, "tags": dict(sorted((job.tags or {}).items()))}
    schedules = {s.name: {"job": s.job_name, "default_status": s.default_status.value}
                 for s in definitions.schedules}
    sensors = {s.name: {"jobs": sorted(j.name for j in s.jobs) if s.has_jobs else [],
                        "default_status": s.default_status.value} for s in definitions.sensors}
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}:{'blocking' if c.blocking else 'non-blocking'}"
                    for spec_def in definitions.asset_checks for c in spec_def.check_specs)
    return {"assets": assets, "jobs": jobs, "schedules": dict(sorted(schedules.items())),
            "sensors": dict(sorted(sensors.items())), "checks": checks}


def test_the_graph_matches_its_snapshot(monkeypatch):
    """A change to assets, dependencies, jobs, schedules, sensors or checks shows up as a diff of
    tests/snapshots/definitions.json; regenerate it with GRASP_UPDATE_SNAPSHOTS=1 and review the diff."""
    import json
    import os

    snapshot = graph_snapshot(defs)
    if os.environ.get("GRASP_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(snapshot, indent=2, sort_keys=False) + "\n")
    assert snapshot == json.loads(SNAPSHOT.read_text())


def test_every_launchpad_field_has_a_description():
    from assets.resources import GraspStorage, WorkloadResource

    configs = [launchpad.CorpusConfig, launchpad.ReferenceConfig, launchpad.SketchConfig, launchpad.PlanConfig,
               launchpad.RetrainConfig, launchpad.SurrogateConfig, launchpad.SelectionConfig,
               launchpad.MixtureConfig, launchpad.ValidationConfig, WorkloadResource, GraspStorage]
    missing = [f"{cls.__name__}.{name}" for cls in configs for name, field in cls.model_fields.items()
               if not field.description]
    assert missing == []

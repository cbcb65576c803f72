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
    for job in ("grasp_prepare", "grasp_retrain", "grasp_fit_and_curate", "grasp_reoptimise_mixture",
                "grasp_update_mixture"):
        assert defs.resolve_job_def(job).name == job


def test_every_asset_declares_a_code_version_and_a_description():
    for assets_def in defs.resolve_all_asset_specs():
        assert assets_def.code_version, assets_def.key
        assert assets_def.description, assets_def.key


@pytest.mark.parametrize("config_cls", [launchpad.CorpusConfig, launchpad.ReferenceConfig, launchpad.SketchConfig,
                                        launchpad.PlanConfig, launchpad.RetrainConfig, launchpad.SurrogateConfig,
                                        launchpad.SelectionConfig, launchpad.MixtureConfig,
                                        launchpad.MixtureUpdateConfig, launchpad.ValidationConfig,
                                        launchpad.ExportConfig,
                                        launchpad.MaintenanceConfig])
def test_launchpad_config_defaults_equal_library_defaults(config_cls):
    params_cls = config_cls.params_cls
    assert set(config_cls.model_fields) == {f.name for f in dataclasses.fields(params_cls)}
    assert launchpad.to_params(config_cls()) == params_cls()


def test_workspace_file_loads_the_code_location(tmp_path):
    import os
    import subprocess
    import sys

    repo = Path(__file__).parents[1]
    dagster_cli = Path(sys.executable).with_name("dagster")
    completed = subprocess.run([str(dagster_cli), "definitions", "validate", "-w", "workspace.yaml"],
                               cwd=repo, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "DAGSTER_HOME": str(tmp_path)})
    assert completed.returncode == 0, completed.stdout + completed.stderr


# ---------------------------------------------------------------- the graph, as a visible diff

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def graph_snapshot(definitions: dg.Definitions) -> dict:
    """Asset keys with their deps, groups, partitions, code versions, automation and the op (stage)
    writing them; jobs, schedules, sensors, checks."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name, "code_version": node.code_version,
            "partitions": getattr(node.partitions_def, "name", None) if node.partitions_def else None,
            "pools": sorted(node.pools or []),
            "automation": node.automation_condition.get_label() if node.automation_condition else None,
            "stage": node.metadata.get("grasp/stage") if node.is_materializable else "external"}
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
               launchpad.MixtureConfig, launchpad.MixtureUpdateConfig, launchpad.ValidationConfig,
               launchpad.ExportConfig,
               launchpad.MaintenanceConfig, WorkloadResource, GraspStorage]
    missing = [f"{cls.__name__}.{name}" for cls in configs for name, field in cls.model_fields.items()
               if not field.description]
    assert missing == []


# ---------------------------------------------------------------- one stage, one name


def test_each_stage_is_the_op_of_the_assets_module_named_like_it_configured_as_its_record_says():
    """The record (grasp_pipeline/stages/registry.py) and the Dagster layer agree: module = op = stage,
    the op's launchpad config is the record's settings section, and it takes the workload iff the record says."""
    import inspect

    from assets.definitions import STAGE_MODULES
    from grasp_pipeline.config import PipelineParams
    from grasp_pipeline.stages import STAGES

    found = {}
    for module in STAGE_MODULES:
        for assets_def in (v for v in vars(module).values() if isinstance(v, dg.AssetsDefinition)):
            parameters = inspect.signature(assets_def.op.compute_fn.decorated_fn).parameters
            config = parameters["config"].annotation.params_cls if "config" in parameters else None
            found[assets_def.op.name] = (module.__name__, config, "workload" in parameters)
    defaults = PipelineParams()
    assert found == {stage.name: (f"assets.{stage.name}", stage.section and type(getattr(defaults, stage.section)),
                                  stage.workload) for stage in STAGES}


# ---------------------------------------------------------------- catalog fidelity


def test_every_delta_table_of_the_contract_and_the_lineage_table_is_an_asset_named_like_it():
    from grasp_pipeline.infra.lineage import LINEAGE_TABLE
    from grasp_pipeline.infra.storage import CONTRACT

    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(CONTRACT) | {LINEAGE_TABLE} <= keys, sorted(set(CONTRACT) | {LINEAGE_TABLE} - keys)


def test_the_storage_resource_reads_grasp_root_when_a_run_starts_not_at_import(monkeypatch, tmp_path):
    from assets.resources import GraspStorage

    monkeypatch.setenv("GRASP_ROOT", str(tmp_path / "first"))
    assert GraspStorage().store().root == str(tmp_path / "first")
    monkeypatch.setenv("GRASP_ROOT", str(tmp_path / "second"))  # the same resource, a later run
    assert GraspStorage().store().root == str(tmp_path / "second")
    assert GraspStorage(root=str(tmp_path / "pinned")).store().root == str(tmp_path / "pinned")


def test_the_dagster_layer_imports_no_private_dagster_module():
    import ast

    private, layer = [], Path(__file__).parents[1] / "assets"
    for path in sorted(layer.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            private += [f"{path.relative_to(layer).as_posix()}: {n}" for n in names
                        if n.startswith("dagster") and "._" in n]
    assert private == [f"{path}: {module}" for path, (module, _) in sorted(NO_PUBLIC_EXPORT.items())]


# The private imports the Dagster layer needs: the result types of the (public) run-launcher hook
# `check_run_worker_health` (assets/deploy/run_launcher.py), and the check for an interrupt Dagster holds
# while an in-process step waits for a pool slot, so Ctrl-C stops a blocked `grasp run` (assets/cli/instance.py).
NO_PUBLIC_EXPORT = {"cli/instance.py": ("dagster._utils.interrupts", ("check_captured_interrupt",)),
                    "deploy/run_launcher.py": ("dagster._core.launcher", ("CheckRunHealthResult", "WorkerStatus"))}


def test_each_private_dagster_import_is_of_something_dagster_does_not_export_publicly():
    """When Dagster exports them, this fails: import them from `dagster` and empty NO_PUBLIC_EXPORT."""
    for path, (module, names) in NO_PUBLIC_EXPORT.items():
        assert [n for n in names if hasattr(dg, n)] == [], f"{path}: import them from dagster, not {module}"


def test_launchpad_defaults_follow_grasp_profile_and_grasp_config_when_the_code_location_loads(tmp_path):
    """Runs launched with no run config (declarative automation) use the deployment's profile."""
    import json
    import os
    import subprocess
    import sys

    override = tmp_path / "override.json"
    override.write_text(json.dumps({"sketch": {"k": 48}}))
    probe = ("from assets.config import CorpusConfig, SketchConfig; from assets.resources import WorkloadResource; "
             "print(CorpusConfig().pool_examples_per_domain, SketchConfig().k)")
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                               cwd=Path(__file__).parents[1],
                               env={**os.environ, "GRASP_PROFILE": "smoke", "GRASP_CONFIG": str(override)})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == ["120", "48"]  # smoke's pool bound, the override's k

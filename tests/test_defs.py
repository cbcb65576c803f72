"""The code location loads, and its launchpad configs mirror the library's parameters."""

from __future__ import annotations

import dataclasses

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

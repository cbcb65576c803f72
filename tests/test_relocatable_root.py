"""A copied storage root keeps its MLflow artifacts under itself (issue 30, item 7): the copy's mlflow.db
named the original's absolute artifact folder, so every run of the copy wrote into the original."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlflow.tracking import MlflowClient

from assets.resources import GraspStorage


def artifact_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "mlartifacts").rglob("*") if p.is_file()}


def test_a_copied_root_writes_and_reads_its_artifacts_under_its_own_folder(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    with GraspStorage(root=str(original)).tracker().run("first") as run:
        run.log_dict({"where": "original"}, "first.json")
    first_run = run.run_id
    shutil.copytree(original, copy)
    before = artifact_files(original)
    assert any(name.endswith("first.json") for name in before)

    tracker = GraspStorage(root=str(copy)).tracker()
    with tracker.run("second") as run:
        run.log_dict({"where": "copy"}, "second.json")
    assert artifact_files(original) == before  # the original is untouched (was: second.json landed in it)
    assert any(name.endswith("second.json") for name in artifact_files(copy))
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    for run_id in (first_run, run.run_id):  # old runs of the copy read the copy's own artifacts too
        uri = client.get_run(run_id).info.artifact_uri
        assert uri.startswith(copy.resolve().as_uri() + "/"), uri
    # the original, used again, still owns its own folder
    GraspStorage(root=str(original)).tracker()
    assert MlflowClient(tracking_uri=f"sqlite:///{original.resolve() / 'mlflow.db'}").get_run(
        first_run).info.artifact_uri.startswith(original.resolve().as_uri() + "/")

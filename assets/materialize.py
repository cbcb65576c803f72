"""The one pattern every asset follows: open an MLflow run, call the library stage, log what
it wrote, and return Dagster metadata (MLflow run id, Delta versions, row counts, schema)."""

from __future__ import annotations

import base64
import dataclasses
import io
from typing import Callable

import dagster as dg

from grasp_pipeline.commits import recording
from grasp_pipeline.lineage import index_lineage, lineage_summary
from grasp_pipeline.secrets import redact, redact_values
from grasp_pipeline.stages import StageResult
from grasp_pipeline.tracking import TrackedRun, TrackingError

from .leases import step_lease
from .resources import GraspStorage


def run_stage(context: dg.AssetExecutionContext, storage: GraspStorage, params: dict,
              compute: Callable[[TrackedRun], StageResult]) -> dg.MaterializeResult:
    """Runs `compute` inside an MLflow run tagged with the Dagster run; returns the result.

    The stage's commits carry their lineage (`commits.recording`); the `lineage` index and MLflow
    come after. If MLflow fails once the tables are committed, the step fails with a message naming
    the committed versions (their lineage is in the commits) and the MLflow run ends FAILED.
    """
    asset = context.asset_key.to_user_string()
    tracker = storage.tracker()
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    tags = {"dagster.run_id": context.run.run_id, "dagster.asset": asset, "dagster.code_version": code_version}
    with step_lease(context, storage.store().root), tracker.run(asset, tags=tags) as run:
        run.log_params(params)
        with recording(asset, dagster_run_id=context.run.run_id, mlflow_run_id=run.run_id,
                       code_version=code_version, params=params):
            result = compute(run)
        index_lineage(storage.store(), result.writes)
        try:
            _log_result(run, result)
        except TrackingError as error:
            committed = ", ".join(f"{w.table}@{w.version}" for w in result.writes)
            raise TrackingError(f"{asset}: committed {committed} (lineage in each commit; the data is kept), "
                                f"then MLflow logging failed at {tracker.tracking_uri}: {error}. MLflow run "
                                f"{run.run_id} ends FAILED (now, or, while MLflow is down, when the next stage on "
                                f"this host reaches it); rematerialise {asset} to log it again") from None
    metadata = _metadata(storage, tracker.tracking_uri, run, result)
    if result.reads and result.writes:  # where this came from: versions read, their runs, model, corpus
        metadata["lineage"] = dg.MetadataValue.json(
            redact_values(lineage_summary(storage.store(), result.writes[0].table, result.writes[0].version)))
    import matplotlib.pyplot as plt

    for figure in result.figures.values():
        plt.close(figure)  # pyplot keeps every figure alive otherwise
    return dg.MaterializeResult(metadata=metadata, data_version=_data_version(result))


def _log_result(run: TrackedRun, result: StageResult) -> None:
    """Logs the stage's metrics, the versions it wrote and read, its artifacts and figures."""
    run.log_metrics({k: v for k, v in result.metrics.items() if isinstance(v, (int, float))})
    run.set_tags({f"delta_version.{w.table}": w.version for w in result.writes})
    run.set_tags({f"read_version.{table}": version for table, version in result.reads.items()})
    for name, payload in result.artifacts.items():
        run.log_dict(payload, name)
    for name, figure in result.figures.items():
        run.log_figure(figure, name)


def _metadata(storage: GraspStorage, tracking_uri: str, run: TrackedRun, result: StageResult) -> dict:
    store = storage.store()
    primary = result.writes[0]
    metadata = {
        "mlflow_run_id": run.run_id,
        "mlflow_tracking_uri": redact(tracking_uri),
        "dagster/row_count": primary.rows,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, dtype) for name, dtype in primary.schema.items()]),
        "dagster/uri": store.uri(primary.table),
    }
    for table, version in result.reads.items():
        metadata[f"{table}.read_version"] = version
    for write in result.writes:
        metadata[f"{write.table}.delta_version"] = write.version
        metadata[f"{write.table}.rows"] = write.rows
        metadata[f"{write.table}.uri"] = dg.MetadataValue.path(store.uri(write.table))
    for key, value in result.metrics.items():
        value = plain(value)
        if isinstance(value, (bool, int, float, str)):
            metadata[key] = redact(value) if isinstance(value, str) else value
    for name, figure in result.figures.items():
        metadata[f"figure.{name}"] = dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{_png_base64(figure)})\n\nAlso logged to MLflow run "
            f"`{run.run_id}` as `{name}`.")
    return metadata


def _png_base64(figure) -> str:
    """The figure as an inline PNG, so the Dagster UI shows it next to the metadata."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def _data_version(result: StageResult) -> dg.DataVersion:
    """The data version is the Delta versions written, so reruns that rewrite tables mark
    downstream assets stale in the UI."""
    return dg.DataVersion(",".join(f"{w.table}@{w.version}" for w in result.writes))


def plain(value):
    """numpy scalars → Python scalars (Dagster metadata serialises only the latter)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def params_dict(params) -> dict:
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)

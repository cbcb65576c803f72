"""The one pattern every asset follows: open an MLflow run, call the library stage, log what
it wrote, and return Dagster metadata (MLflow run id, Delta versions, row counts, schema).

A stage writes one or more tables (assets/catalog.py): each becomes its own
MaterializeResult with that table's row count, schema, URI and Delta version; the stage's
metrics and figures go on its primary (first) table. While the stage computes, its progress
events go to the run's log (rate-limited) and its metric curves to MLflow (assets/reporting.py).

The step holds the root's writer lease (assets/leases.py); the stage's commits carry their
lineage (`commits.recording`), and the `lineage` index (an external asset, reported as
materialised) and MLflow come after. If MLflow fails once the tables are committed, the step
fails with a message naming the committed versions and the MLflow run ends FAILED.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import time
from collections.abc import Callable

import dagster as dg

from grasp_pipeline.evaluation.verdict_report import Verdict, read_verdict
from grasp_pipeline.infra import progress
from grasp_pipeline.infra.commits import recording
from grasp_pipeline.infra.lineage import LINEAGE_TABLE, index_lineage, lineage_summary
from grasp_pipeline.infra.secrets import redact, redact_values
from grasp_pipeline.infra.tracking import TrackedRun, TrackingError
from grasp_pipeline.stages import StageResult
from grasp_pipeline.stages.registry import stage_ordinal

from .catalog import column_schema, tables_of
from .leases import step_lease
from .reporting import DagsterLog, MlflowCurves
from .resources import GraspStorage

# Dagster run tag naming the MLflow run a stage's MLflow run nests under (`grasp run` sets it)
MLFLOW_PARENT_TAG = "grasp/mlflow_parent_run_id"


def run_stage(context: dg.AssetExecutionContext, storage: GraspStorage, params: dict,
              compute: Callable[[TrackedRun], StageResult], verdict: str | None = None):
    """Runs `compute` inside an MLflow run tagged with the Dagster run.

    Returns one MaterializeResult per asset of the step: a single result for a stage that
    writes one table, else a tuple in the order of `tables_of(stage)`. With `verdict` (a verdict
    table the stage writes), the primary asset shows that verdict (a Markdown table with its
    figure, a few named figures) instead of the stage's metrics, which stay in MLflow, and the
    MLflow run gets the verdict as a table, a figure and Markdown.
    """
    stage = context.op_def.name
    with progress.task(stage, unit="stage", ordinal=stage_ordinal(stage)):
        tracker = storage.tracker()
        code_version = _code_version(context)
        tags = {"dagster.run_id": context.run.run_id, "dagster.asset": stage,
                "dagster.assets": ",".join(k.to_user_string() for k in _asset_keys(context)),
                "dagster.code_version": code_version}
        with step_lease(context, storage.store().root), \
                tracker.run(stage, tags=tags, parent_run_id=context.run.tags.get(MLFLOW_PARENT_TAG),
                            source=f"grasp_pipeline/stages/{stage}.py") as run:
            run.log_params(params)
            curves = MlflowCurves(run)
            with recording(stage, dagster_run_id=context.run.run_id, mlflow_run_id=run.run_id,
                           code_version=code_version, params=params):
                result, seconds = _compute_reporting_progress(context, curves, compute)
            _report_lineage_version(context, storage, index_lineage(storage.store(), result.writes))
            shown = read_verdict(storage.store(), verdict) if verdict else None
            try:
                curves.flush()
                _log_result(storage, run, result, seconds)
                if shown is not None:
                    _log_verdict(run, shown)
            except TrackingError as error:
                raise _committed_then_tracking_failed(stage, tracker.tracking_uri, run, result, error) from None
        results = _materialize_results(context, storage, tracker.tracking_uri, run, result, shown)
    import matplotlib.pyplot as plt

    for figure in result.figures.values():
        plt.close(figure)  # pyplot keeps every figure alive otherwise
    return results[0] if len(results) == 1 else tuple(results)


def _asset_keys(context: dg.AssetExecutionContext) -> list[dg.AssetKey]:
    """The step's asset keys, in the catalog's table order."""
    order = {table: i for i, table in enumerate(tables_of(context.op_def.name))}
    return sorted(context.selected_asset_keys, key=lambda k: (order.get(k.to_user_string(), len(order)),
                                                              k.to_user_string()))


def _code_version(context: dg.AssetExecutionContext) -> str:
    versions = context.assets_def.code_versions_by_key
    return next((versions[k] for k in _asset_keys(context) if versions.get(k)), "")


def _compute_reporting_progress(context: dg.AssetExecutionContext, curves: MlflowCurves,
                                compute: Callable[[TrackedRun], StageResult]) -> tuple[StageResult, float]:
    """Runs the stage with its progress going to the run's log and to `curves` (MLflow; the caller
    flushes them once the stage is done); returns (result, wall seconds)."""
    began = time.perf_counter()
    with progress.reporting(DagsterLog(context.log)), progress.reporting(curves):
        result = compute(curves.run)
    return result, time.perf_counter() - began


def _log_result(storage: GraspStorage, run: TrackedRun, result: StageResult, seconds: float) -> None:
    """Metrics, Delta versions (as tags and as mlflow.data inputs), artifacts and figures of the stage."""
    run.log_metrics({**{k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
                     "stage_seconds": seconds})
    run.set_tags({**{f"delta_version.{w.table}": w.version for w in result.writes},
                  **{f"read_version.{table}": version for table, version in result.reads.items()}})
    run.log_table_inputs(result.reads, storage.store().uri)
    for name, payload in result.artifacts.items():
        run.log_dict(payload, name)
    for name, figure in result.figures.items():
        run.log_figure(figure, name)


def _log_verdict(run: TrackedRun, verdict: Verdict) -> None:
    """The verdict on the MLflow run: `<table>.json` (an MLflow table), `<table>.png` and `<table>.md`."""
    run.log_table(verdict.rows, f"{verdict.table}.json")
    run.log_figure(verdict.figure(), f"{verdict.table}.png")
    run.log_text(verdict.markdown(), f"{verdict.table}.md")


def _committed_then_tracking_failed(stage: str, tracking_uri: str, run: TrackedRun, result: StageResult,
                                    error: TrackingError) -> TrackingError:
    """The error of a step whose tables are committed but whose MLflow logging failed: it names the
    committed versions, so nobody reruns blind."""
    committed = ", ".join(f"{w.table}@{w.version}" for w in result.writes)
    return TrackingError(f"{stage}: committed {committed} (lineage in each commit; the data is kept), "
                         f"then MLflow logging failed at {redact(tracking_uri)}: {error}. MLflow run "
                         f"{run.run_id} ends FAILED (now, or, while MLflow is down, when the next stage on "
                         f"this host reaches it); rematerialise {stage} to log it again")


def _report_lineage_version(context: dg.AssetExecutionContext, storage: GraspStorage, indexed: int) -> None:
    """Tells the instance that the (external) lineage asset, the index, has `indexed` new rows."""
    if not indexed:
        return
    version = storage.store().version(LINEAGE_TABLE)
    context.log_event(dg.AssetMaterialization(
        asset_key=LINEAGE_TABLE, metadata={"lineage.delta_version": version, "rows_appended": indexed},
        tags={"dagster/data_version": f"{LINEAGE_TABLE}@{version}"}))


def _materialize_results(context: dg.AssetExecutionContext, storage: GraspStorage, tracking_uri: str,
                         run: TrackedRun, result: StageResult, verdict: Verdict | None = None
                         ) -> list[dg.MaterializeResult]:
    """One MaterializeResult per asset of the step: its table's metadata, and the stage's on the primary."""
    store = storage.store()
    writes = {w.table: w for w in result.writes}
    shared = {"mlflow_run_id": run.run_id, "mlflow_tracking_uri": redact(tracking_uri),
              **{f"{table}.read_version": version for table, version in result.reads.items()}}
    if result.reads and result.writes:  # where this came from: versions read, their runs, model, corpus
        shared["lineage"] = dg.MetadataValue.json(
            redact_values(lineage_summary(store, result.writes[0].table, result.writes[0].version)))
    results = []
    for i, key in enumerate(_asset_keys(context)):
        table = key.to_user_string()
        write = writes.get(table)
        if write is None and result.writes:
            raise ValueError(f"stage {context.op_def.name} declares table {table!r} (assets/catalog.py) but wrote "
                             f"{sorted(writes)}; fix the stage or its record in grasp_pipeline/stages/registry.py")
        metadata = dict(shared)
        if write is not None:
            metadata.update(_table_metadata(store, write))
        if i == 0:
            metadata.update(_verdict_metadata(run, verdict) if verdict is not None else _stage_metadata(run, result))
        version = f"{table}@{write.version}" if write is not None else \
            ",".join(f"{t}@{v}" for t, v in sorted(result.reads.items()))  # a derived export: what it read
        results.append(dg.MaterializeResult(asset_key=key, metadata=metadata, data_version=dg.DataVersion(version)))
    return results


def _table_metadata(store, write) -> dict:
    return {
        "dagster/row_count": write.rows,
        "dagster/column_schema": column_schema(write.table, write.schema),
        "dagster/uri": store.uri(write.table),
        f"{write.table}.delta_version": write.version,
        f"{write.table}.rows": write.rows,
        f"{write.table}.uri": dg.MetadataValue.path(store.uri(write.table)),
    }


def _stage_metadata(run: TrackedRun, result: StageResult) -> dict:
    """The stage's scalar metrics and its figures (inline PNGs)."""
    metadata = {}
    for key, value in result.metrics.items():
        value = plain(value)
        if isinstance(value, (bool, int, float, str)):
            metadata[key] = redact(value) if isinstance(value, str) else value
    for name, figure in result.figures.items():
        metadata[f"figure.{name}"] = dg.MetadataValue.md(
            f"![{name}](data:image/png;base64,{_png_base64(figure)})\n\nAlso logged to MLflow run "
            f"`{run.run_id}` as `{name}`.")
    return metadata


def _verdict_metadata(run: TrackedRun, verdict: Verdict) -> dict:
    """The verdict as the asset page shows it: a Markdown table with its figure inline, and a few
    named figures (the stage's full metrics are on its MLflow run)."""
    markdown = (f"{verdict.markdown()}\n\n![{verdict.table}](data:image/png;base64,{_png_base64(verdict.figure())})"
                f"\n\nAll metrics, this table (`{verdict.table}.json`) and the figure are on MLflow run "
                f"`{run.run_id}`.")
    return {"verdict": dg.MetadataValue.md(markdown),
            **{f"verdict.{name}": plain(value) for name, value in verdict.scalars().items()}}


def _png_base64(figure) -> str:
    """The figure as an inline PNG, so the Dagster UI shows it next to the metadata."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return base64.b64encode(buffer.getvalue()).decode()


def plain(value):
    """numpy scalars → Python scalars (Dagster metadata serialises only the latter)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def params_dict(params) -> dict:
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)

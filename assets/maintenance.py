"""`grasp_maintain`: compaction, checkpoints and a lineage-safe vacuum of every table (an op job).

The work is grasp_pipeline/ops/maintenance.py; each maintained table gets an AssetObservation
(versions, files before and after, files vacuumed), so the catalog shows when a table was
last maintained. Maintenance changes no rows, so it materialises nothing. The step holds the root's writer
lease exclusively (assets/leases.py) while it commits.
"""

import dataclasses

import dagster as dg

from grasp_pipeline.infra import progress
from grasp_pipeline.ops.maintenance import TableReport, maintain

from .config import MaintenanceConfig, to_params
from .leases import step_lease
from .reporting import DagsterLog
from .resources import GraspStorage


def observation(report: TableReport, what: str = "grasp_maintain") -> dg.AssetObservation:
    """The catalog's record of one table's maintenance."""
    return dg.AssetObservation(asset_key=report.table, description=f"maintained by {what}", metadata={
        "delta_version": report.version_after, "version_before": report.version_before,
        "files_before": report.files_before, "files_after": report.files_after, "files_compacted": report.compacted,
        "files_vacuumed": len(report.vacuumed), "kept_versions": len(report.kept_versions),
        "checkpoint": report.checkpoint, "properties_set": dg.MetadataValue.json(report.properties_set)})


@dg.op(description="Retention properties, compaction, checkpoint and a vacuum that keeps every version lineage "
                   "needs, for every table under the storage root.")
def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, storage: GraspStorage) -> None:
    params = to_params(config)
    store = storage.store()
    with step_lease(context, store.root), progress.reporting(DagsterLog(context.log)):
        reports = maintain(store, params)
    for report in reports:
        context.log.info(f"{report.table}: {dataclasses.asdict(report) | {'vacuumed': len(report.vacuumed)}}")
        context.log_event(observation(report))


@dg.job(name="grasp_maintain", description="Compact, checkpoint and vacuum every table, keeping the history "
                                          "lineage needs (grasp maintain does the same).")
def maintenance_job():
    maintain_tables()

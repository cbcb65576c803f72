"""Resources: where tables and MLflow runs live, and which workload (model, device) runs.

Nothing here reads the environment at import: an empty `root` means GRASP_ROOT as the run
sees it when it starts (else `.grasp/storage`), an empty `tracking_uri` MLFLOW_TRACKING_URI
then (an empty `experiment` GRASP_MLFLOW_EXPERIMENT), so one code location serves every
deployment and a changed variable applies to the next run without reloading the code.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from grasp_pipeline.config import WorkloadParams
from grasp_pipeline.infra.secrets import has_credentials, redact
from grasp_pipeline.infra.storage import DEFAULT_LOG_RETENTION_DAYS, DeltaStore
from grasp_pipeline.infra.tracking import Tracker, default_tracking_uri, resolve_tracking_uri
from grasp_pipeline.workloads import Workload

from . import env
from .config import config_from_params, launchpad_defaults, to_params


class GraspStorage(dg.ConfigurableResource):
    """The storage root (one Delta table per asset) and the MLflow tracking store."""

    root: str = Field(default="", description="Local folder or object-store URI (s3://bucket/prefix) of the Delta "
                      "tables; empty = $GRASP_ROOT when the run starts, else .grasp/storage. Object-store "
                      "credentials come from environment variables only.")
    tracking_uri: str = Field(default="", description="MLflow tracking URI (e.g. http://127.0.0.1:5000); empty = "
                              "$MLFLOW_TRACKING_URI, else a SQLite store under a local root.")
    experiment: str = Field(default="", description="MLflow experiment of the runs; empty = $GRASP_MLFLOW_EXPERIMENT "
                            "when the run starts, else grasp-pipeline.")
    system_metrics: bool = Field(default=False, description="Sample CPU, memory and GPU use into every stage's MLflow "
                                 "run (needs psutil; also on with MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true).")
    log_retention_days: int = Field(default=DEFAULT_LOG_RETENTION_DAYS, description="delta.logRetentionDuration of "
                                    "tables this run creates: how long their history (time travel, `grasp lineage "
                                    "--reproduce`) survives log cleanup.")

    def store(self) -> DeltaStore:
        return DeltaStore(env.storage_root(self.root or None), log_retention_days=self.log_retention_days)

    def tracker(self) -> Tracker:
        """The MLflow tracker; refuses a configured URI with credentials (Dagster keeps run config)."""
        if has_credentials(self.tracking_uri):
            raise ValueError(f"storage.tracking_uri = {redact(self.tracking_uri)!r} holds credentials, and Dagster "
                             "stores run config: give the URI without them and set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_URI) in the environment of the runs")
        store = self.store()
        uri = resolve_tracking_uri(self.tracking_uri, store.root)
        # artifacts next to the tables only for the local default store; a server stores its own
        local_default = uri == default_tracking_uri(store.root) if store.is_local else False
        return Tracker(uri, artifact_root=os.path.join(store.root, "mlartifacts") if local_default else None,
                       experiment=self.experiment or None, system_metrics=self.system_metrics or None)


class _WorkloadResourceBase(dg.ConfigurableResource):
    def build(self) -> Workload:
        return to_params(self).build()


WorkloadResource = config_from_params(WorkloadParams, "WorkloadResource", base=_WorkloadResourceBase,
                                      defaults=launchpad_defaults().workload)

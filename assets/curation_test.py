"""Curation-test stage: the held-out proof, the last node of the graph (nothing reads its table)."""

import dagster as dg

from grasp_pipeline.stages import run_curation_test

from .catalog import stage_asset
from .config import TestConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("curation_test", pool="torch", code_version="2", group_name="curation", kinds={"torch", "deltalake"})
def curation_test(context: dg.AssetExecutionContext, config: TestConfig, storage: GraspStorage,
                  workload: WorkloadResource):
    """Every selection and mixture retrained with fresh seeds and scored on the `test` task examples:
    paired gains over random (selections) and natural (mixtures) with bootstrap intervals."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_curation_test(storage.store(), workload.build(), params),
                     verdict="curation_test_verdict")

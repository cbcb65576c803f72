"""Surrogate stage: GRASP and the baselines, chosen by LCB on fit subsets, scored on holdout."""

import dagster as dg

from grasp_pipeline.stages import fit_surrogate_tables

from .config import SurrogateConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage


@dg.asset(code_version="2", group_name="surrogates",
          deps=["gradient_sketches", "task_sketches", "subset_plan", "subset_outcomes"], kinds={"deltalake", "mlflow"})
def grasp_surrogate(context: dg.AssetExecutionContext, config: SurrogateConfig,
                    storage: GraspStorage) -> dg.MaterializeResult:
    """Fitted surrogates (`surrogates`), every candidate's CV score, and predictions for every subset."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: fit_surrogate_tables(storage.store(), params, mlflow_run_id=run.run_id))

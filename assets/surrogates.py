"""Surrogate stage: GRASP and the baselines, chosen by LCB on fit subsets, scored on holdout.

Writes four tables, each its own asset: `surrogates`, `surrogate_candidates`,
`surrogate_predictions` and `fidelity_report`.
"""

import dagster as dg

from grasp_pipeline.stages import run_surrogates

from .catalog import stage_asset
from .config import SurrogateConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage


@stage_asset("surrogates", code_version="3", group_name="surrogates", kinds={"deltalake", "mlflow"})
def surrogates(context: dg.AssetExecutionContext, config: SurrogateConfig, storage: GraspStorage):
    """Fitted surrogates, every candidate's CV score, predictions for every subset, and the fidelity report."""
    params = to_params(config)
    return run_stage(context, storage, params_dict(params),
                     lambda run: run_surrogates(storage.store(), params, mlflow_run_id=run.run_id))

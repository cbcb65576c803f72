"""Mixture-update stage: the mixture re-optimised for a changed domain set from the stored surrogate,
sketching only new and revised domains, refitting nothing and picking between candidates by a few
dev retrainings (`grasp mixture-update` runs the same stage without a Dagster run).

The new corpus is the deployment's `corpus.corpus_path` (GRASP_PROFILE and GRASP_CONFIG,
assets/env.py), read with the deployment's other corpus and mixture settings: launch the
`grasp_update_mixture` job when new corpus files land, instead of recomputing the graph. It is
not automated: its input is the corpus files, not a table.
"""

import dagster as dg

from grasp_pipeline.stages import run_mixture_update

from . import env
from .catalog import stage_asset
from .config import MixtureUpdateConfig, to_params
from .materialize import params_dict, run_stage
from .resources import GraspStorage, WorkloadResource


@stage_asset("mixture_update", pool="torch", code_version="3", group_name="mixture", kinds={"torch", "deltalake"})
def mixture_update(context: dg.AssetExecutionContext, config: MixtureUpdateConfig, storage: GraspStorage,
                   workload: WorkloadResource):
    """The `grasp_update` mixture for the deployment's current corpus: stored sketch statistics for
    unchanged domains, fresh sketches for new and revised ones, the stored surrogate, a dev check."""
    params, run = to_params(config), env.pipeline_params()
    return run_stage(context, storage, {**params_dict(params), "corpus_path": run.corpus.corpus_path},
                     lambda _: run_mixture_update(storage.store(), workload.build(), run.corpus, workload.example_bytes,
                                                  run.mixture, params))

"""The code location: every asset, check, resource and job of the GRASP pipeline."""

import dagster as dg

from . import checks, corpus, curation, mixture, model, retraining, sketches, surrogates
from .resources import GraspStorage, WorkloadResource

all_assets = dg.load_assets_from_modules([corpus, model, sketches, retraining, surrogates, curation, mixture])

grasp_pipeline_job = dg.define_asset_job(
    "grasp_pipeline", selection=dg.AssetSelection.all(),
    description="Corpus → sketches → retraining → surrogates → curated selection, validation and mixture.")

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=checks.all_checks,
    jobs=[grasp_pipeline_job],
    resources={"storage": GraspStorage(), "workload": WorkloadResource()},
)

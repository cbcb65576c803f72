"""The code location: every asset, check, resource and job of the GRASP pipeline."""

import dagster as dg

from . import checks, corpus, curation, mixture, model, retraining, sketches, surrogates
from .jobs import all_jobs
from .resources import GraspStorage, WorkloadResource

all_assets = dg.load_assets_from_modules([corpus, model, sketches, retraining, surrogates, curation, mixture])

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=checks.all_checks,
    jobs=all_jobs,
    resources={"storage": GraspStorage(), "workload": WorkloadResource()},
)

"""Settings: every stage's parameter dataclass, the workload's, and the run profiles."""

from .params import (
                     STAGE_PARAMS,
                     CorpusParams,
                     ExportParams,
                     LoopParams,
                     MaintenanceParams,
                     MixtureParams,
                     MixtureUpdateParams,
                     PlanParams,
                     ReferenceParams,
                     RetrainParams,
                     SelectionParams,
                     SketchParams,
                     SurrogateParams,
                     TargetParams,
                     TestParams,
                     ValidationParams,
)
from .profiles import PROFILES, PipelineParams, load_params, with_overrides
from .validation import SettingError, validate, validate_section
from .workload import WorkloadParams

__all__ = ["STAGE_PARAMS", "PROFILES", "CorpusParams", "ExportParams", "LoopParams", "MaintenanceParams",
           "MixtureParams", "MixtureUpdateParams", "PipelineParams", "PlanParams", "ReferenceParams", "RetrainParams",
           "SelectionParams", "SettingError", "SketchParams", "SurrogateParams", "TargetParams", "TestParams",
           "ValidationParams", "WorkloadParams", "load_params", "validate", "validate_section", "with_overrides"]

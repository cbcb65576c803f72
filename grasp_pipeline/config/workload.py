"""`WorkloadParams`: the workload resource's settings, the workloads' own dataclasses combined.

Which workload, on which device, with how many threads is declared here (`WorkloadChoice`);
every hyper-parameter field is inherited from the dataclass its workload registers
(`grasp_pipeline.workloads.registry`), with that field's default and help text. So a
workload's settings are written once, and a new field (say `mlp_ratio`) appears in
`--config` files and the launchpad by itself. A field two workloads declare (`hidden`) must
have one default in both (tests/test_settings.py checks it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch

from ..infra.fields import doc
from ..workloads.base import Workload
from ..workloads.registry import DEFAULT_WORKLOAD, WORKLOADS, make_workload, workload_parameter_names


@dataclass(frozen=True)
class WorkloadChoice:
    """The settings of the workload resource that no workload's own dataclass holds."""

    name: str = doc("Workload (proxy model + loss): byte_ngram (additive n-gram byte LM, the demo's), byte_mlp "
                    "(29k-parameter byte MLP), byte_transformer (~0.9M parameters), vision (digits classifier; its "
                    "own corpus when corpus_path is empty) or hf_causal_lm (a local Hugging Face causal LM).",
                    DEFAULT_WORKLOAD)
    device: str = doc("Torch device for every stage: cpu, cuda, cuda:1, mps.", "cpu")
    torch_threads: int = doc("torch intra-op threads per step (0 = torch default).", 0, minimum=0)


# every registered workload's dataclass is a base; a dataclass lists its bases' fields from the last base
# back, so WorkloadChoice's come first, then the workloads' in registry order
@dataclass(frozen=True)
class WorkloadParams(*(params_cls for _, params_cls in reversed(WORKLOADS.values())), WorkloadChoice):
    """The workload resource: which proxy model and loss, on which device, and its hyper-parameters
    (each workload reads the fields its own dataclass declares)."""

    def model_params(self) -> dict:
        """Returns the hyper-parameters that the chosen workload takes."""
        names = workload_parameter_names(self.name)
        return {k: v for k, v in asdict(self).items() if k in names}

    def active_fields(self) -> dict:
        """The resource's own fields (name, device…) and the chosen workload's hyper-parameters: what
        a run is tracked with (not the other workloads' fields, which it never reads)."""
        return {**{f.name: getattr(self, f.name) for f in fields(WorkloadChoice)}, **self.model_params()}

    def build(self) -> Workload:
        """Returns the configured workload (and sets torch's intra-op threads when asked)."""
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        return make_workload(self.name, device=self.device, **self.model_params())

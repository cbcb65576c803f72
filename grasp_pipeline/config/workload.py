"""`WorkloadParams`: the workload resource's settings, composed from the workloads' own dataclasses.

The common fields (which workload, device, threads, how long a text example is) are
declared here; every hyper-parameter field comes from the dataclass its workload registers
(`grasp_pipeline.workloads.registry`), with that field's default and help text. So a
workload's settings are written once, and a new field (say `mlp_ratio`) appears in
`--config` files and the launchpad by itself. A field two workloads share (`hidden`,
`example_bytes`) must have the same default in both (checked at import).
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, asdict, field, fields, make_dataclass

import torch

from ..infra.fields import doc
from ..workloads.base import Workload
from ..workloads.registry import WORKLOADS, make_workload, workload_parameter_names

_COMMON = [
    ("name", str, doc("Workload (proxy model + loss): byte_ngram (additive n-gram byte LM, the demo's), "
                      "byte_mlp (29k-parameter byte MLP), byte_transformer (~0.9M parameters), vision (digits "
                      "classifier; its own corpus when corpus_path is empty) or hf_causal_lm (a local Hugging "
                      "Face causal LM).", "byte_ngram")),
    ("device", str, doc("Torch device for every stage: cpu, cuda, cuda:1, mps.", "cpu")),
    ("example_bytes", int, doc("Bytes per text example (documents are cut into pieces of at most this; "
                               "byte models pad/truncate to it).", 128, minimum=4)),
]
_LAST = [("torch_threads", int, doc("torch intra-op threads per step (0 = torch default).", 0, minimum=0))]


def _workload_fields() -> list[tuple[str, type, object]]:
    """(name, type, field) of every workload hyper-parameter, in registry order, once each."""
    seen: dict[str, tuple[object, str]] = {name: (f.default, "common") for name, _, f in _COMMON + _LAST}
    out = []
    for workload, (_, params_cls) in WORKLOADS.items():
        hints = typing.get_type_hints(params_cls)
        for f in fields(params_cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if f.name in seen:
                if seen[f.name][0] != default:
                    raise TypeError(f"workload setting {f.name!r} defaults to {default!r} in {workload} but to "
                                    f"{seen[f.name][0]!r} in {seen[f.name][1]}; one setting needs one default")
                continue
            seen[f.name] = (default, workload)
            out.append((f.name, hints[f.name], field(default=default, metadata=dict(f.metadata))))
    return out


def _model_params(self) -> dict:
    """Returns the hyper-parameters that the chosen workload takes."""
    names = workload_parameter_names(self.name)
    return {k: v for k, v in asdict(self).items() if k in names}


def _build(self) -> Workload:
    """Returns the configured workload (and sets torch's intra-op threads when asked)."""
    if self.torch_threads:
        torch.set_num_threads(self.torch_threads)
    return make_workload(self.name, device=self.device, **self.model_params())


WorkloadParams = make_dataclass(
    "WorkloadParams", _COMMON + _workload_fields() + _LAST, frozen=True,
    namespace={"model_params": _model_params, "build": _build,
               "__doc__": "The workload resource: which proxy model and loss, on which device, and its "
                          "hyper-parameters (each workload reads the fields its own dataclass declares)."})
WorkloadParams.__module__ = __name__

"""The workloads by name: the only module that imports their implementations.

No workload imports this module, so adding one is a new module plus one entry in
`WORKLOADS` (`transformers` is imported only when an `hf_causal_lm` workload is built).
"""

from __future__ import annotations

from dataclasses import fields

from .base import Workload
from .byte_mlp import ByteLMWorkload, ByteMLPParams
from .byte_ngram import ByteNGramParams, ByteNGramWorkload
from .byte_transformer import ByteTransformerParams, ByteTransformerWorkload
from .hf_causal_lm import HFCausalLMParams, HFCausalLMWorkload
from .vision import VisionParams, VisionWorkload

DEFAULT_WORKLOAD = "byte_ngram"  # the demo's proxy, and what `workload.name` defaults to

# name -> (workload class, its frozen dataclass of hyper-parameters)
WORKLOADS: dict[str, tuple[type, type]] = {
    "byte_mlp": (ByteLMWorkload, ByteMLPParams),
    "byte_ngram": (ByteNGramWorkload, ByteNGramParams),
    "byte_transformer": (ByteTransformerWorkload, ByteTransformerParams),
    "vision": (VisionWorkload, VisionParams),
    "hf_causal_lm": (HFCausalLMWorkload, HFCausalLMParams),
}


def workload_params_class(name: str) -> type:
    """Returns the hyper-parameter dataclass of the named workload (unknown names are an error)."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    return WORKLOADS[name][1]


def workload_parameter_names(name: str) -> set[str]:
    """Returns the hyper-parameter names the named workload takes."""
    return {f.name for f in fields(workload_params_class(name))}


def make_workload(name: str = DEFAULT_WORKLOAD, device: str = "cpu", **params) -> Workload:
    """Returns the named workload; `params` are its hyper-parameters (unknown ones are an error)."""
    known = workload_parameter_names(name)
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"workload {name!r} has no parameter(s) {sorted(unknown)}; it takes {sorted(known)}")
    cls, params_cls = WORKLOADS[name]
    return cls(params_cls(**params), device=device)

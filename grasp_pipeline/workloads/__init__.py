"""Workloads: the proxy model, its loss and how a corpus row becomes a tensor.

`base` holds the protocol and the shared pieces, one module per workload implements it, and
`registry` alone maps names to implementations.
"""

from .base import IGNORE, PAD, Params, Workload, state_fingerprint
from .registry import WORKLOADS, make_workload, workload_parameter_names, workload_params_class

__all__ = ["IGNORE", "PAD", "Params", "Workload", "WORKLOADS", "make_workload",
           "state_fingerprint", "workload_parameter_names", "workload_params_class"]

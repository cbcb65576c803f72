"""Deployment profile `k8s`: the same code location, each step in its own Kubernetes Job.

Needs `pip install dagster-k8s` (the version matching dagster) in the image; see
deploy/k8s/ for the image build and the Helm values. Not exercised by the test suite (no
cluster is available in CI); the asset code is the same as in the tested profiles.
"""

from dagster_k8s import k8s_job_executor

from ..definitions import build_definitions

# Per-step pods; limits and env come from the run config or the Helm values (deploy/k8s/values.yaml).
defs = build_definitions(executor=k8s_job_executor.configured(
    {"max_concurrent": 8, "env_secrets": ["grasp-object-store"], "env_config_maps": ["grasp-settings"]},
    name="k8s"))

"""Each Dagster step holds the storage root's writer lease while it runs (grasp_pipeline.infra.lease).

A step of a `grasp run` shares the lease the CLI holds for the whole run (its owner id is the
run tag `grasp/lease`): it only checks it before each commit. A step of any other run (UI,
schedule, sensor) takes the lease for itself, waiting up to GRASP_LEASE_WAIT seconds
(default 600) for another writer to finish, keeps it with a heartbeat and gives it back
when the step ends. Partitioned steps (shards, retraining batches) hold it shared, so the
partition runs of a backfill still write side by side on many workers; every other step
holds it exclusively.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from grasp_pipeline.infra.lease import RootLease

LEASE_TAG = "grasp/lease"
DEFAULT_WAIT_SECONDS = 600.0


@contextmanager
def step_lease(context: dg.AssetExecutionContext, root: str) -> Iterator[RootLease]:
    """Holds (or, inside a `grasp run`, checks) the root's writer lease for the block."""
    shared = context.run.tags.get(LEASE_TAG)
    if shared:
        lease = RootLease(root, owner=shared)
        lease.ensure()
        with lease.guarding():
            yield lease
        return
    lease = RootLease(root, owner=f"dagster-run:{context.run.run_id}",
                      purpose=f"Dagster run {context.run.run_id} ({context.run.job_name})")
    mode = "shared" if context.has_partition_key or context.has_partition_key_range else "exclusive"
    with lease.held(wait=float(os.environ.get("GRASP_LEASE_WAIT", DEFAULT_WAIT_SECONDS)), mode=mode):
        yield lease

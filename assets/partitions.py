"""The two dynamic partitionings: corpus shards (of `gradient_sketches`) and retraining batches
(of `subset_outcomes`), registered by the assets upstream of them."""

from __future__ import annotations

import dagster as dg

corpus_shard_partitions = dg.DynamicPartitionsDefinition(name="corpus_shards")
retraining_batches = dg.DynamicPartitionsDefinition(name="retraining_batches")

PARTITION_RANGE_START = "dagster/asset_partition_range_start"
PARTITION_RANGE_END = "dagster/asset_partition_range_end"


def sync_dynamic_partitions(instance: dg.DagsterInstance, partitions: dg.DynamicPartitionsDefinition,
                            keys: list[str]) -> None:
    """Makes the dynamic partitions exactly `keys` (adds new ones, drops vanished ones)."""
    existing = set(instance.get_dynamic_partitions(partitions.name))
    for key in sorted(existing - set(keys)):
        instance.delete_dynamic_partition(partitions.name, key)
    missing = [k for k in sorted(keys) if k not in existing]
    if missing:
        instance.add_dynamic_partitions(partitions.name, missing)


def full_range_tags(instance: dg.DagsterInstance, partitions_name: str | None) -> dict[str, str]:
    """Run tags selecting every registered partition of `partitions_name` (one run); {} for None."""
    if partitions_name is None:
        return {}
    keys = instance.get_dynamic_partitions(partitions_name)
    if not keys:
        raise ValueError(f"no {partitions_name} partitions are registered; run grasp_prepare first")
    return {PARTITION_RANGE_START: keys[0], PARTITION_RANGE_END: keys[-1]}

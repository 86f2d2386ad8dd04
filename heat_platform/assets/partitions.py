"""How the asset graph is partitioned.

Batches are partitioned by experiment x batch (both discovered at run time by the landing-zone
sensor); everything learned from an experiment's data as a whole (training set, models, gate,
deployment) is partitioned by experiment, and depends on all of its batches through
``by_experiment``.
"""

import warnings

import dagster as dg

experiments = dg.DynamicPartitionsDefinition(name="experiments")
batches = dg.DynamicPartitionsDefinition(name="batches")
experiment_batches = dg.MultiPartitionsDefinition({"experiment": experiments, "batch": batches})

# experiment x batch <-> experiment. (Beta in Dagster 1.13; it is the documented way to map a
# multi-partitioned asset onto one of its dimensions, so we accept the beta warning once, here.)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.BetaWarning)
    by_experiment = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="experiment")


def partitioned_check(name: str, asset: str, description: str, *,
                      partitions_def: dg.PartitionsDefinition = experiment_batches,
                      blocking: bool = True) -> dg.AssetCheckSpec:
    """A check evaluated per partition of its asset. Without its own partitions_def a check on
    a partitioned asset is recorded without the partition (preview in Dagster 1.13)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset=asset, blocking=blocking, description=description,
                                 partitions_def=partitions_def)


def batch_partition(experiment: str, batch: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"experiment": experiment, "batch": batch})


def experiment_and_batch(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext
                         ) -> tuple[str, str]:
    key = context.partition_key
    return split_batch_key(key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey)
                           else key)


def split_batch_key(key: str | dict[str, str]) -> tuple[str, str]:
    """(experiment, batch) of an experiment x batch partition key (or its dimensions)."""
    keys = key if isinstance(key, dict) else (
        experiment_batches.get_partition_key_from_str(key).keys_by_dimension)
    return keys["experiment"], keys["batch"]

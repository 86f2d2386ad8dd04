"""Stage 3: the per-experiment training set, refreshed by automation when batches are validated."""

import dagster as dg
import polars as pl

from heat_platform.assets.features import TrainingSetConfig, training_set
from heat_platform.definitions import defs
from heat_platform.names import REGIME_START, TRIGGER
from heat_platform.simulate import simulate_to_landing


def _materialize(instance, resources, tags=None):
    result = dg.materialize([training_set], instance=instance, partition_key="inclusion",
                            resources=resources, tags=tags)
    return result, result.output_for_node("training_set")


def test_training_set_unions_batches_and_versions_by_their_contents(platform_paths, sensor,
                                                                    resources):
    for seed in (1, 2):
        simulate_to_landing(platform_paths.landing, "inclusion", seed=seed)
    sensor.until_quiet()
    _, first = _materialize(sensor.instance, resources)
    again_result, again = _materialize(sensor.instance, resources)
    assert again.data_version == first.data_version  # same partitions, same version

    loaded = first.load()
    assert loaded.train.height + loaded.validation.height == 2 * 3200
    held_out = set(loaded.validation["sensor"])
    assert held_out and held_out.isdisjoint(set(loaded.train["sensor"]))  # split by sensors
    assert (first.directory / "scaling.json").exists()  # the transform travels with the data
    metadata = again_result.asset_materializations_for_node("training_set")[0].metadata
    assert "b001" in metadata["partitions"].value and "b002" in metadata["partitions"].value

    simulate_to_landing(platform_paths.landing, "inclusion", seed=3)
    sensor.until_quiet()
    _, third = _materialize(sensor.instance, resources)
    assert third.data_version != first.data_version
    grown = third.load()
    # a sensor keeps its side of the split when more data arrives
    assert held_out <= set(grown.validation["sensor"])
    assert pl.concat([grown.train, grown.validation]).height == 3 * 3200


def test_a_retraining_run_after_drift_starts_a_new_regime(platform_paths, sensor, storage):
    simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    sensor.until_quiet()
    simulate_to_landing(platform_paths.landing, "inclusion", seed=2, shift="material")
    sensor.until_quiet()
    drifted = storage.catalog().current_version("inclusion", "b002-material")

    def invoke(**run_tags):  # direct invocation: the asset function and its run's tags
        context = dg.build_asset_context(partition_key="inclusion", run_tags=run_tags)
        return training_set(context, TrainingSetConfig(), storage).value

    stored = invoke(**{REGIME_START: str(drifted.ingest_seq), TRIGGER: "drift"})
    assert set(stored.load().train["batch"]) == {"b002-material"}
    later = invoke()  # the regime is remembered
    assert set(later.load().train["batch"]) == {"b002-material"}


def test_automation_refreshes_on_validated_batches_not_on_a_new_spec(platform_paths, sensor,
                                                                    resources):
    from heat_platform.assets.measurements import problem_spec

    simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    sensor.until_quiet()
    _materialize(sensor.instance, resources)
    first = dg.evaluate_automation_conditions(defs=defs, instance=sensor.instance)

    dg.materialize([problem_spec], instance=sensor.instance, partition_key="inclusion",
                   resources=resources)
    after_spec = dg.evaluate_automation_conditions(defs=defs, instance=sensor.instance,
                                                   cursor=first.cursor)
    assert after_spec.get_num_requested(dg.AssetKey("training_set")) == 0

    simulate_to_landing(platform_paths.landing, "inclusion", seed=2)
    sensor.until_quiet()
    after_batch = dg.evaluate_automation_conditions(defs=defs, instance=sensor.instance,
                                                    cursor=after_spec.cursor)
    assert after_batch.get_requested_partitions(dg.AssetKey("training_set")) == {"inclusion"}

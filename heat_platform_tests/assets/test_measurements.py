"""Stage 1 on a real Dagster instance: the landing-zone sensor, problem_spec, raw_measurements."""

import os
import shutil

import dagster as dg
import pytest

from heat_platform.assets import measurements
from heat_platform.simulate import simulate_to_landing, write_problem
from heat_platform_tests.conftest import latest_materialization


def _keys(result) -> list[str]:
    return [request.run_key for request in result.run_requests or []]


def test_sensor_finds_files_adds_partitions_and_is_idempotent(platform_paths, sensor, storage):
    simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    simulate_to_landing(platform_paths.landing, "inclusion", seed=2)

    first, _ = sensor.tick()  # a file must look the same on two ticks before it is read
    assert not first.run_requests and first.skip_reason
    second, ran = sensor.tick()  # the spec first: validation needs its domain
    spec = platform_paths.landing / "inclusion" / "problem.yaml"
    assert _keys(second) == [f"inclusion|problem.yaml@{storage.catalog().latest_spec('inclusion').sha256}"
                             f"@{spec.stat().st_mtime_ns}"]
    assert all(r.success for r in ran)
    assert sensor.instance.get_dynamic_partitions("experiments") == ["inclusion"]

    third, ran = sensor.tick()
    assert sorted(r.partition_key.keys_by_dimension["batch"] for r in third.run_requests) == ["b001", "b002"]
    assert all(r.success for r in ran)
    assert sorted(sensor.instance.get_dynamic_partitions("batches")) == ["b001", "b002"]

    quiet, _ = sensor.tick()
    assert not quiet.run_requests  # a second tick with no new files requests nothing
    # a restart (same cursor, e.g. after a daemon restart) requests nothing either
    again = measurements.landing_zone_sensor(dg.build_sensor_context(
        instance=sensor.instance, cursor=sensor.cursor, resources={"storage": storage}))
    assert not again.run_requests


def test_touched_file_is_no_news_and_changed_file_is_a_new_version(platform_paths, sensor, storage):
    batch = simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    sensor.until_quiet()
    first = storage.catalog().current_version("inclusion", "b001")

    os.utime(batch)  # touched, same bytes
    sensor.tick()
    touched, _ = sensor.tick()
    assert not touched.run_requests

    simulate_to_landing(platform_paths.landing, "inclusion", seed=7, batch="b001")  # rewritten
    sensor.tick()
    changed, ran = sensor.tick()
    assert len(changed.run_requests) == 1 and ran[0].success
    history = storage.catalog().history("inclusion", "b001")
    assert history[0].sha256 == first.sha256 and len(history) == 2
    assert os.path.exists(first.blob_path)  # the old version stays retrievable

    # changed back to the first content: still a new run (the run key carries the mtime)
    shutil.copyfile(first.blob_path, batch)
    sensor.tick()
    back, ran = sensor.tick()
    assert back.run_requests[0].run_key.startswith(f"inclusion|b001@{first.sha256}@")
    assert ran[0].success
    keys = [r.tags["dagster/run_key"] for r in sensor.instance.get_runs()
            if r.tags.get("dagster/partition") == "b001|inclusion"]
    assert len(keys) == len(set(keys)) == 3
    assert storage.catalog().current_version("inclusion", "b001").sha256 == first.sha256


def test_raw_measurements_metadata_and_data_version(platform_paths, sensor, storage):
    simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    sensor.until_quiet()
    materialization = latest_materialization(sensor.instance, "raw_measurements", "b001|inclusion")
    metadata = materialization.metadata
    version = storage.catalog().current_version("inclusion", "b001")
    assert metadata["dagster/row_count"].value == 3200
    assert metadata["sha256"].value == version.sha256
    assert {c.name for c in metadata["dagster/column_schema"].schema.columns} >= {"x", "y", "t", "u"}
    assert "| x | 0.0625 | 1.9375 |" in metadata["ranges"].value
    assert metadata["source path"].value.endswith("b001.parquet")
    assert materialization.tags["dagster/data_version"] == version.sha256  # = content hash


def test_a_malicious_problem_yaml_is_rejected_and_other_experiments_keep_working(
        platform_paths, sensor, storage):
    (platform_paths.landing / "evil").mkdir(parents=True)
    (platform_paths.landing / "evil" / "problem.yaml").write_text(
        "name: evil\ndomain: {x: [0, 1], y: [0, 1], t: [0, 1]}\n"
        "source: \"__import__('os').system('echo pwned')\"\n")
    (platform_paths.landing / "evil" / "b001.csv").write_text("x,y,t,u\n0.5,0.5,0.1,0.2\n")
    simulate_to_landing(platform_paths.landing, "inclusion", seed=1)

    outcomes = sensor.until_quiet()
    failed = [o for o in outcomes if not o.success]
    assert len(failed) == 1
    failure = failed[0].get_step_failure_events()[0].step_failure_data.error
    assert "source" in failure.message and "__import__" in failure.message
    latest = storage.catalog().latest_spec("evil")
    assert not latest.valid and "__import__" in latest.message
    # the evil experiment's batch waits (nothing ingested); the good experiment went through
    assert storage.catalog().current_version("evil", "b001") is None
    assert storage.catalog().current_version("inclusion", "b001").status == "validated"
    quiet, _ = sensor.tick()
    assert not quiet.run_requests


@pytest.mark.parametrize("name", ["batch one.csv", "mesure-été.csv"])
def test_names_with_spaces_and_unicode_are_ingested(platform_paths, sensor, storage, name):
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    (platform_paths.landing / "inclusion" / name).write_text(
        "x,y,t,u\n" + "".join(f"{0.1 + i * 0.01},0.5,0.1,0.2\n" for i in range(20)))
    outcomes = sensor.until_quiet()
    assert outcomes and all(o.success for o in outcomes)
    batch = name.removesuffix(".csv")
    assert storage.catalog().current_version("inclusion", batch).status == "validated"


def test_paths_outside_the_landing_zone_are_refused(platform_paths, sensor, storage, tmp_path):
    outside = tmp_path / "secret.csv"
    outside.write_text("x,y,t,u\n0.5,0.5,0.1,0.2\n")
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    (platform_paths.landing / "inclusion" / "escape.csv").symlink_to(outside)
    (platform_paths.landing / "..sneaky").mkdir()
    from heat_platform.data.discovery import plan_tick

    plan = plan_tick(storage.landing(), storage.catalog(), None)
    refused = {str(s.path): s.reason for s in plan.skipped}
    assert any("escape.csv" in path and "outside the landing root" in reason
               for path, reason in refused.items())
    assert any("..sneaky" in path for path in refused)
    for _ in range(3):
        result, _ = sensor.tick()
        assert not any("escape" in r.run_key for r in result.run_requests or [])
    assert storage.catalog().current_version("inclusion", "escape") is None
    assert list((platform_paths.blobs).rglob("*.csv")) == []


def test_problem_spec_called_directly_parses_and_records_the_spec(platform_paths, storage):
    """Direct invocation (Dagster's unit-test idiom): no run, no instance, the asset's own
    answer and metadata."""
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    context = dg.build_asset_context(partition_key="inclusion")
    result = measurements.problem_spec(context, storage=storage)
    spec_version = storage.catalog().latest_spec("inclusion")
    assert result.data_version == dg.DataVersion(spec_version.sha256)
    assert result.metadata["domain"].value == {"x": [0.0, 2.0], "y": [0.0, 1.0], "t": [0.0, 0.5]}
    assert "diffusivity_truth" in result.metadata["formulas"].value


def test_problem_spec_called_directly_names_the_offending_key_and_token(platform_paths, storage):
    (platform_paths.landing / "evil").mkdir(parents=True)
    (platform_paths.landing / "evil" / "problem.yaml").write_text(
        "name: evil\ndomain: {x: [0, 1], y: [0, 1], t: [0, 1]}\nsource: \"x.__class__\"\n")
    with pytest.raises(dg.Failure) as failure:
        measurements.problem_spec(dg.build_asset_context(partition_key="evil"), storage=storage)
    assert failure.value.metadata["key"].value == "source"
    assert "__class__" in failure.value.description


def test_a_problem_yaml_naming_another_experiment_is_refused(platform_paths, sensor, storage):
    # a spec copied from another experiment's folder: which name is meant cannot be guessed
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    (platform_paths.landing / "plate").mkdir()
    shutil.copyfile(platform_paths.landing / "inclusion" / "problem.yaml",
                    platform_paths.landing / "plate" / "problem.yaml")
    (platform_paths.landing / "plate" / "b001.csv").write_text("x,y,t,u\n0.5,0.5,0.1,0.2\n")
    outcomes = sensor.until_quiet()
    [failed] = [o for o in outcomes if not o.success]
    error = failed.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "name: is 'inclusion' but the file is in the folder 'plate'" in error.description
    assert error.metadata["key"].value == "name"
    latest = storage.catalog().latest_spec("plate")
    assert not latest.valid and "set 'name: plate'" in latest.message
    assert storage.catalog().current_version("plate", "b001") is None  # its batches wait
    assert storage.catalog().latest_spec("inclusion").valid


def test_a_ragged_csv_is_reported_under_the_name_the_user_gave_it(platform_paths, sensor,
                                                                    storage):
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    (platform_paths.landing / "inclusion" / "field run 3.csv").write_text(
        "x,y,t,u\n0.5,0.5,0.1,0.2\n0.5,0.5,0.2,0,3\n")
    sensor.until_quiet()
    version = storage.catalog().current_version("inclusion", "field run 3")
    assert version.status == "rejected"
    assert "malformed_csv: 'field run 3.csv' line 3 has 5 fields" in version.message
    assert version.sha256 not in version.message  # not the stored blob's name


def test_a_file_swapped_between_the_hash_and_the_copy_is_ingested_once_as_its_new_self(
        platform_paths, sensor, storage):
    write_problem(platform_paths.landing, "inclusion", "inclusion")
    sensor.until_quiet()
    first = simulate_to_landing(platform_paths.landing, "inclusion", seed=1)
    sensor.tick()
    announced, _ = sensor.tick(execute=False)  # hashed and announced, not yet copied
    [request] = announced.run_requests
    simulate_to_landing(platform_paths.landing, "inclusion", seed=2, batch="b001")  # swapped
    result = dg.materialize([measurements.raw_measurements], instance=sensor.instance,
                            partition_key=request.partition_key, resources=sensor.resources,
                            tags={**request.tags, "dagster/run_key": request.run_key},
                            raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "changed after it was hashed" in failure.description
    assert storage.catalog().current_version("inclusion", "b001") is None  # nothing recorded
    assert not list(platform_paths.blobs.rglob("*.parquet"))  # nor stored

    outcomes = sensor.until_quiet()  # the new content is announced and ingested, once
    assert len(outcomes) == 1 and outcomes[0].success
    [version] = storage.catalog().history("inclusion", "b001")
    from heat_platform.files import file_digest

    assert version.sha256 == file_digest(first) != request.tags["heat_platform/sha256"]

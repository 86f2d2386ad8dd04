"""Stage 7: drift reports per batch against the champion, and the retraining sensor.

A champion trained for ~40 s (too coarse for the gate's default thresholds, good enough to tell
a changed material from more of the same) is judged on a benign batch and on a batch from a
changed material; the sensor is evaluated against the real instance.
"""

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import dagster as dg
import pytest

from heat_platform.assets.monitoring import RETRAINED, drift_retrain_sensor
from heat_platform.assets.partitions import batch_partition
from heat_platform.names import REGIME_START
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.assets.conftest import EXPERIMENT, RELAXED
from heat_platform_tests.conftest import latest_materialization, materialize

COARSE = {"adam_iterations": 200, "lbfgs_iterations": 150, "n_domain": 500, "threads": 2}


def drift_of(instance, resources, batch: str):
    key = batch_partition(EXPERIMENT, batch)
    materialize(instance, resources, ["drift_report"], key)
    return latest_materialization(instance, "drift_report", key).metadata


@pytest.mark.slow  # trains a model
def test_a_changed_material_is_flagged_and_asks_for_one_retrain(ingested, sensor, resources,
                                                                platform_paths, receiver,
                                                                tmp_path):
    from heat_platform.resources.alerts import AlertWebhook

    url, alerts = receiver
    resources = {**resources, "alerts": AlertWebhook(url=url)}
    instance = ingested
    first = drift_of(instance, resources, "b001")
    assert first["drift"].value is False and "no champion" in first["reasons"].value

    materialize(instance, resources,
                ["classical_inversion", "pinn_model", "gate_report", "champion_model"],
                EXPERIMENT, run_config={"ops": {"pinn_model": {"config": COARSE},
                                                "gate_report": {"config": RELAXED}}})

    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=2)  # same material
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=3, shift="material")
    sensor.until_quiet()
    benign = drift_of(instance, resources, "b002")
    assert benign["drift"].value is False, benign["reasons"].value
    assert benign["misfit ratio"].value < 1.1
    changed = drift_of(instance, resources, "b003-material")
    assert changed["drift"].value is True, changed["reasons"].value
    assert changed["misfit ratio"].value > 1.3 and "physics drift" in changed["reasons"].value
    # the Evidently HTML is an MLflow artifact: linked over HTTP, not only as a local path
    report = Path(changed["evidently report (file)"].value)
    assert report.suffix == ".html" and changed["evidently report (MLflow)"].value.startswith(
        "http://127.0.0.1:5000/#/experiments/")
    query = parse_qs(urlparse(changed["evidently report (HTTP)"].value).query)
    logged = resources["mlflow"].store().client().download_artifacts(
        query["run_uuid"][0], query["path"][0], str(tmp_path))
    assert Path(logged).read_bytes() == report.read_bytes()
    assert changed["champion version"].value == "1"
    (alert,) = alerts  # the benign batch sent none
    assert alert["severity"] == "warning" and "b003-material" in alert["title"]
    assert alert["details"]["misfit_ratio"] > 1.3 and alert["links"]["report"].endswith(".html")

    context = dg.build_sensor_context(instance=instance)
    result = drift_retrain_sensor(context)
    (request,) = result.run_requests  # the benign batch asks for nothing
    assert request.partition_key == EXPERIMENT and request.run_key == f"drift:{EXPERIMENT}:v1"
    drifted_seq = resources["storage"].catalog().current_version(
        EXPERIMENT, "b003-material").ingest_seq
    assert request.tags[REGIME_START] == str(drifted_seq)  # retrain on the new material only
    assert request.tags["heat_platform/trigger"] == "drift"
    # the run names what it materialises, so that automation does not take its new PINN for
    # news and judge it again in a gate run of its own
    assert {k.to_user_string() for k in request.asset_selection} == set(RETRAINED)

    # the cursor moves on: nothing new, nothing asked
    again = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    assert not again.run_requests
    # more drifted data in the same episode (same champion) asks under the same run key, which
    # the daemon runs once; a sensor restarted without its cursor does the same
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=4, shift="material")
    sensor.until_quiet()
    assert drift_of(instance, resources, "b004-material")["drift"].value is True
    later = drift_retrain_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    restarted = drift_retrain_sensor(dg.build_sensor_context(instance=instance))
    assert {r.run_key for r in later.run_requests} == {f"drift:{EXPERIMENT}:v1"}
    assert {r.run_key for r in restarted.run_requests} == {f"drift:{EXPERIMENT}:v1"}

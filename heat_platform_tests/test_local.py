"""The real Dagster daemon on a temporary instance: the sensor and declarative automation
discover files, add partitions, launch runs, and stay quiet when nothing is new."""

import time

import dagster as dg
import pytest

from heat_platform.local import LocalDaemon, wait_until
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import latest_materialization


def runs_for(instance, asset: str) -> list:
    return [r for r in instance.get_runs()
            if r.asset_selection and dg.AssetKey(asset) in r.asset_selection]


@pytest.mark.slow
def test_daemon_runs_the_graph_from_landing_files_to_the_gate(platform_paths):
    for seed in (1, 2):
        simulate_to_landing(platform_paths.landing, "inclusion", seed=seed)
    with LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3,
                     env={"HEAT_PLATFORM_PINN_PROFILE": "smoke"}) as daemon, \
            dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        wait_until(lambda: latest_materialization(instance, "training_set", "inclusion"),
                   timeout_s=240, what="the training set", daemon=daemon)
        assert sorted(instance.get_dynamic_partitions("batches")) == ["b001", "b002"]
        ingest = [r for r in instance.get_runs() if r.job_name.startswith("ingest_")]
        assert sorted(r.job_name for r in ingest) == [
            "ingest_batch", "ingest_batch", "ingest_problem_spec"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in ingest)

        # automation trains on the new training set, and the gate judges the (smoke) model
        gate = wait_until(lambda: latest_materialization(instance, "gate_report", "inclusion"),
                          timeout_s=300, what="the gate", daemon=daemon)
        assert gate.metadata["decision"].value == "reject"  # a smoke model is not good enough
        assert latest_materialization(instance, "champion_model", "inclusion") is None
        assert latest_materialization(instance, "deployed_bento", "inclusion") is None

        runs = len(instance.get_runs())
        time.sleep(8)  # several more sensor and automation ticks with nothing new
        assert len(instance.get_runs()) == runs

        simulate_to_landing(platform_paths.landing, "inclusion", seed=3)
        wait_until(lambda: "b003" in latest_materialization(
            instance, "training_set", "inclusion").metadata["partitions"].value,
                   timeout_s=180, what="the training set to refresh", daemon=daemon)
        time.sleep(8)
        # new data alone does not retrain (drift or a person does) nor re-judge the same model
        assert len(runs_for(instance, "pinn_model")) == 1
        assert len(runs_for(instance, "gate_report")) == 1

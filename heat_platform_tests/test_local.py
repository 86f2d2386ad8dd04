"""The real Dagster daemon on a temporary instance: the sensor and declarative automation
discover files, add partitions, launch runs, and stay quiet when nothing is new."""

import time

import dagster as dg
import pytest

from heat_platform.local import LocalDaemon, wait_until
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import latest_materialization


@pytest.mark.slow
def test_daemon_ingests_landing_files_and_refreshes_the_training_set(platform_paths):
    for seed in (1, 2):
        simulate_to_landing(platform_paths.landing, "inclusion", seed=seed)
    with LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3) as daemon, \
            dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        wait_until(lambda: latest_materialization(instance, "training_set", "inclusion"),
                   timeout_s=240, what="the training set", daemon=daemon)
        assert sorted(instance.get_dynamic_partitions("batches")) == ["b001", "b002"]
        runs = instance.get_runs()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), \
            [(r.job_name, r.status) for r in runs]
        assert sorted(r.job_name for r in runs) == [
            "__ASSET_JOB", "ingest_batch", "ingest_batch", "ingest_problem_spec"]

        time.sleep(8)  # several more sensor and automation ticks with nothing new
        assert len(instance.get_runs()) == len(runs)

        simulate_to_landing(platform_paths.landing, "inclusion", seed=3)
        wait_until(lambda: len(instance.get_runs(
            filters=dg.RunsFilter(job_name="__ASSET_JOB",
                                  statuses=[dg.DagsterRunStatus.SUCCESS]))) == 2,
                   timeout_s=180, what="the training set to refresh", daemon=daemon)
        table = latest_materialization(instance, "training_set", "inclusion").metadata["partitions"]
        assert "b003" in table.value

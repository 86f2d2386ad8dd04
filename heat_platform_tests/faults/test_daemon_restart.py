"""The Dagster daemon restarted in the middle of a training run, on the real daemon.

The daemon is stopped while the PINN trains (its run worker goes with it), a batch lands while
nothing runs, and a new daemon starts. What must hold: the interrupted run is failed by run
monitoring (its worker is gone), retried by run retries, and the retry's training resumes from
the checkpoint; no batch is ingested twice (the sensor's cursor survived) and none is lost (the
one landed during the outage is ingested and validated).
"""

import dagster as dg
import pytest

from heat_platform.local import LocalDaemon, wait_for
from heat_platform.polling import wait_until
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import latest_materialization

EXPERIMENT = "inclusion"
ENV = {"HEAT_PLATFORM_PINN_PROFILE": "quick"}  # about 40 s of training on 2 quiet cores


def group_members(group: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE and _pgid(p.pid) == group]


def _pgid(pid: int) -> int | None:
    import os

    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 min on 2 quiet cores; the waits allow a loaded machine
def test_a_training_interrupted_by_a_daemon_restart_is_retried_and_resumes(platform_paths):
    for seed in (1, 2):
        simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=seed)
    checkpoints = platform_paths.store / "checkpoints" / EXPERIMENT
    daemon = LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3, env=ENV)
    with daemon:
        # stop as soon as the training has written its first checkpoint (after Adam, before
        # L-BFGS): the run is in the middle of its pinn_model step
        wait_for(daemon, lambda: any(checkpoints.glob("*.pt")), timeout_s=900,
                 what="the training's first checkpoint", interval_s=0.2)
        group = daemon.process.pid
        # a restart that does not wait for the run (SIGKILL one second after SIGTERM): with the
        # default 30 s grace the worker, which does not heed SIGTERM, could finish the training
        daemon.stop(grace_s=1)
    # the daemon, its code server and the run worker: gone (SIGKILLed ones within moments)
    wait_until(lambda: not group_members(group), timeout_s=10, what="the daemon's group to end",
               interval_s=0.1)

    with dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        [interrupted] = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
        assert latest_materialization(instance, "pinn_model", EXPERIMENT) is None
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=3)  # lands during the outage

    daemon = LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3, env=ENV)
    with daemon, dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        record = wait_for(daemon, lambda: model_record(instance), timeout_s=900,
                          what="the retried training")
        wait_for(daemon, lambda: _validated(platform_paths, "b003"), timeout_s=300,
                 what="the batch landed during the outage to be validated")

        failed = instance.get_run_by_id(interrupted.run_id)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        failure = [e for e in instance.all_logs(interrupted.run_id)
                   if e.dagster_event_type == dg.DagsterEventType.RUN_FAILURE][-1]
        assert "worker process" in failure.message and "is gone" in failure.message
        retry = instance.get_run_by_id(failed.tags["dagster/auto_retry_run_id"])
        assert retry.tags["dagster/parent_run_id"] == interrupted.run_id
        assert record.run_id == retry.run_id
        model = record.asset_materialization
        assert model.metadata["resumed from step"].value == 200  # the checkpoint after Adam

        # nothing ingested twice, nothing lost
        ingests = [r for r in instance.get_runs() if r.job_name == "ingest_batch"]
        assert sorted(r.tags["dagster/partition"] for r in ingests) == [
            f"b00{i}|{EXPERIMENT}" for i in (1, 2, 3)]
        catalog = _catalog(platform_paths)
        for batch in ("b001", "b002", "b003"):
            [version] = catalog.history(EXPERIMENT, batch)
            assert version.status == "validated", (batch, version.message)
        assert len([r for r in instance.get_runs() if r.job_name == "ingest_problem_spec"]) == 1
    wait_until(lambda: not group_members(daemon.process.pid), timeout_s=10,
               what="the second daemon's group to end", interval_s=0.1)


def model_record(instance):
    """The newest materialization record of pinn_model (it knows its run), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("pinn_model"), asset_partitions=[EXPERIMENT]),
        limit=1).records
    return records[0] if records else None


def _catalog(paths):
    from heat_platform.data.catalog import Catalog

    return Catalog(paths.catalog_url)


def _validated(paths, batch: str):
    version = _catalog(paths).current_version(EXPERIMENT, batch)
    return version if version is not None and version.status != "ingested" else None

"""The closed loop on the real Dagster daemon: sensors and declarative automation evaluated by
Dagster itself on a temporary instance, exactly as in production, only with faster ticks and
the `quick` training profile (about 40 s per training on 2 cores). The story it leaves behind is
the one `make demo` tells (same experiment, same batches), so the demo run afterwards is a
second `make demo`: it must retell that finished story, not wait for it to happen again."""

import os
import time

import dagster as dg
import pytest

from heat_platform.local import LocalDaemon, ticks_since, wait_for
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.conftest import latest_materialization

EXPERIMENT = "inclusion"
# (no escalation to a stronger profile: the story told here is the drift loop's)
ENV = {"HEAT_PLATFORM_PINN_PROFILE": "quick", "HEAT_PLATFORM_ESCALATION": "0"}


def deployed_version(instance):
    found = latest_materialization(instance, "deployed_bento", EXPERIMENT)
    return found and found.metadata["champion version"].value


def drift_of(instance, batch: str):
    return latest_materialization(instance, "drift_report", f"{batch}|{EXPERIMENT}")


def retrains(instance) -> list:
    return instance.get_runs(filters=dg.RunsFilter(job_name="retrain"))


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 4-5 min on 2 quiet cores; the waits allow a loaded machine
def test_drift_retrains_once_and_deploys_a_new_champion_a_benign_batch_does_not(platform_paths,
                                                                               capsys):
    for seed in (1, 2):
        simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=seed)
    daemon = LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3, env=ENV)
    with daemon, dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        def wait(what, probe, timeout_s=600):
            return wait_for(daemon, probe, timeout_s=timeout_s, what=what)

        # baseline: ingest -> training set -> PINN -> gate -> champion v1 -> deployed bento
        # the training set's two candidates are versions 1 and 2 (the classical fit, the PINN)
        first = wait("the first deployment", lambda: deployed_version(instance))
        assert first in ("1", "2")
        ingest = [r for r in instance.get_runs() if r.job_name.startswith("ingest_")]
        assert sorted(r.job_name for r in ingest) == [
            "ingest_batch", "ingest_batch", "ingest_problem_spec"]
        assert latest_materialization(instance, "gate_report", EXPERIMENT) \
            .metadata["decision"].value == "promote"

        # the material changes: drift -> exactly one retrain on the new regime -> v2 deployed
        simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=3, shift="material")
        report = wait("the drift report", lambda: drift_of(instance, "b003-material"))
        assert report.metadata["drift"].value is True, report.metadata["reasons"].value
        wait("the retrained champion", lambda: int(deployed_version(instance)) > 2,
             timeout_s=400)
        second = deployed_version(instance)
        # deployed_bento is the run's last step: its materialisation is stored just before the
        # run ends, so wait for the end before asking how it ended
        wait("the retrain run's end", lambda: all(r.is_finished for r in retrains(instance)),
             timeout_s=60)
        (retrain,) = retrains(instance)
        assert retrain.status == dg.DagsterRunStatus.SUCCESS
        # it names what it materialises, so automation does not take its new PINN for news and
        # judge it again in a gate run of its own (seen: a second gate rejected the PINN the
        # retrain's gate had just let the classical fit beat, and failed its run)
        assert dg.AssetKey("gate_report") in retrain.asset_selection
        assert retrain.tags["heat_platform/trigger"] == "drift"
        assert retrain.tags["heat_platform/drift_batch"] == "b003-material"
        trained_on = latest_materialization(instance, "training_set", EXPERIMENT)
        assert "b001" not in trained_on.metadata["partitions"].value  # the new regime only

        # more of the new material: judged against v2, no drift, no retrain
        simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=4, shift="material")
        report = wait("the benign drift report", lambda: drift_of(instance, "b004-material"))
        assert report.metadata["drift"].value is False, report.metadata["reasons"].value
        assert report.metadata["champion version"].value == second
        judged = time.time()
        wait("two sensor and automation ticks after the benign report", lambda: all(
            ticks_since(instance, name, judged) >= 2
            for name in ("drift_retrain_sensor", "automation")))
        assert len(retrains(instance)) == 1

    # a restarted daemon (and sensor) does not trigger again
    daemon = LocalDaemon(platform_paths, sensor_interval_s=2, automation_interval_s=3, env=ENV)
    with daemon, dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        runs, restarted = len(instance.get_runs()), time.time()
        wait_for(daemon, lambda: all(ticks_since(instance, name, restarted) >= 2 for name in (
            "landing_zone_sensor", "drift_retrain_sensor", "automation")),
            timeout_s=120, what="two ticks of every sensor after the restart")
        assert len(retrains(instance)) == 1 and len(instance.get_runs()) == runs
        failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert not failed, [(r.job_name, r.tags.get("dagster/partition")) for r in failed]
        runs = len(instance.get_runs())

    # a second `make demo`: the latest training set now holds only the new regime's batches, and
    # the demo used to wait for the baseline's for ever; it retells the recorded story instead
    from heat_platform.demo import run_demo

    capsys.readouterr()
    assert run_demo(platform_paths, timeout_s=180) == 0  # a hang fails after 180 s, not 900
    told = capsys.readouterr().out
    for chapter in ("training_set ", "gate report:", "deployed heat_service:",
                    "GET /predict-temperature", "drift_report b003-material: drift=True",
                    "drift_report b004-material: drift=False",
                    "retraining runs: 1 (one per drift episode)"):
        assert chapter in told, told
    assert told.count("deployed heat_service:") == 2  # the first champion, then the retrained
    with dg.DagsterInstance.from_config(str(platform_paths.dagster_home)) as instance:
        assert len(instance.get_runs()) == runs  # retold: nothing ran again


def test_the_run_launcher_fails_a_run_whose_worker_process_is_gone_so_that_it_is_retried(
        dagster_instance, monkeypatch):
    """What run monitoring asks LocalRunLauncher about each started run (the full path, a
    daemon stopped in the middle of a training, is faults/test_daemon_restart.py). A run whose
    worker is gone is failed, and failed so that the run retry daemon retries it whenever it
    reads the failure: it reads new failure events, then the runs, and does not retry a run that
    is still "started" then (what Dagster's own order, the event before the status, allowed)."""
    import subprocess
    import sys

    from dagster._core.events import EngineEventData
    from dagster._core.launcher import WorkerStatus
    from dagster._daemon.auto_run_reexecution.auto_run_reexecution import should_retry

    from heat_platform.local import LocalRunLauncher

    launcher = dagster_instance.run_launcher
    assert isinstance(launcher, LocalRunLauncher)  # dagster.yaml's run_launcher

    @dg.op
    def noop() -> None:
        pass

    @dg.job
    def one_step():
        noop()

    run = dagster_instance.create_run_for_job(one_step)
    dagster_instance.run_storage.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING  # in process

    def record_worker(pid: int) -> None:
        dagster_instance.report_engine_event(f"Started process for run (pid: {pid}).", run,
                                             EngineEventData.in_process(pid))

    record_worker(os.getpid())
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert dagster_instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

    # the run retry daemon, reading the run at the worst moment: just after the failure event
    retry_decisions = []
    storage = dagster_instance.event_log_storage
    store_event = storage.store_event

    def store_and_read(event):
        store_event(event)
        if event.dagster_event_type == dg.DagsterEventType.RUN_FAILURE:
            retry_decisions.append(
                should_retry(dagster_instance.get_run_by_id(event.run_id), dagster_instance))

    monkeypatch.setattr(storage, "store_event", store_and_read)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record_worker(int(gone.stdout))
    health = launcher.check_run_worker_health(run)
    assert health.status == WorkerStatus.FAILED
    assert f"Its worker process {int(gone.stdout)} is gone" in health.msg

    failed = dagster_instance.get_run_by_id(run.run_id)
    assert failed.status == dg.DagsterRunStatus.FAILURE
    [failure] = dagster_instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert failure.message == health.msg
    assert retry_decisions == [True]
    assert failed.tags["dagster/will_retry"] == "true"
    # checked again (monitoring polls): a failed run is not failed twice
    launcher.check_run_worker_health(failed)
    assert len(dagster_instance.all_logs(run.run_id,
                                         of_type=dg.DagsterEventType.RUN_FAILURE)) == 1


def test_a_timeout_waiting_on_the_daemon_says_what_its_runs_did(platform_paths, dagster_instance):
    """describe_runs, which wait_for's timeout prints: each run's status and outcome tags, and
    for a failed run the step that failed and why, so that a daemon test failing in CI says
    whether a run was retried and how its retry ended."""
    from heat_platform.local import describe_runs

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
    def flaky() -> None:
        raise RuntimeError("the sensor cable came loose")

    @dg.op
    def fine() -> None:
        pass

    @dg.job
    def fails():
        flaky()

    @dg.job
    def succeeds():
        fine()

    assert succeeds.execute_in_process(instance=dagster_instance).success
    failed = fails.execute_in_process(instance=dagster_instance, raise_on_error=False,
                                      tags={"dagster/partition": "inclusion"})
    assert not failed.success

    lines = describe_runs(platform_paths).splitlines()
    assert lines[0].startswith(f"{failed.run_id[:8]} fails [] FAILURE partition=inclusion")
    details = lines[1:-1]
    assert any(line.strip().startswith("STEP_UP_FOR_RETRY flaky:") for line in details)
    assert any(line.strip().startswith("STEP_FAILURE flaky:") and "sensor cable" in line
               for line in details), details
    assert any(line.strip().startswith("RUN_FAILURE:") for line in details)
    assert lines[-1].split()[1:] == ["succeeds", "[]", "SUCCESS"]  # a success is one line

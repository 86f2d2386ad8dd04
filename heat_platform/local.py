"""Running the platform on one machine: the Dagster daemon (sensors, automation, run queue), and
the web UIs (the MLflow UI, the Dagster webserver) for `make dev` and the browser test.

`make dev` runs the daemon together with the webserver (`dagster dev`); the demo and the
integration tests run the daemon alone, so sensors and declarative automation are evaluated by
Dagster itself exactly as in production, and wait for what they produce through the instance.

Stopping is whole: :class:`LocalDaemon` stops its process group and then kills what is left of
it (a code server waiting for its runs, a run worker that does not heed SIGTERM), and while it is
entered a SIGTERM or SIGHUP unwinds the program like Ctrl-C does, so whatever stops the program
stops the daemon. Runs whose worker died with it are not left "started" for ever:
when Dagster's run monitoring checks them, :class:`LocalRunLauncher` (``dagster.yaml``) finds
their worker process gone and fails them, and the instance's run retries re-execute them from
the failed step (a training resumes from its checkpoint).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

from heat_platform.instance import prepare_instance
from heat_platform.paths import PROJECT_ROOT, PlatformPaths
from heat_platform.polling import wait_until
from heat_platform.processes import log_tail, raise_if_exited, stop_process_group
from heat_platform.settings import child_environment

T = TypeVar("T")


class LocalDaemon:
    """`dagster-daemon run` on the platform's instance, in its own process group."""

    def __init__(self, paths: PlatformPaths, *, sensor_interval_s: int = 10,
                 automation_interval_s: int = 15, env: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.log_path = paths.home / "logs" / "dagster-daemon.log"
        self.env = child_environment(
            HEAT_PLATFORM_HOME=str(paths.home),
            DAGSTER_HOME=str(paths.dagster_home),
            HEAT_PLATFORM_SENSOR_INTERVAL=str(sensor_interval_s),
            HEAT_PLATFORM_AUTOMATION_INTERVAL=str(automation_interval_s),
            **(env or {}),
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> LocalDaemon:
        prepare_instance(self.paths)
        create_storage(self.paths)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-daemon")), "run",
                 "-w", str(PROJECT_ROOT / "workspace.yaml")],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the whole group (daemon and the runs it launched), SIGKILL after grace, then
        SIGKILL whatever of the group outlived the daemon (its code server waits for its runs,
        and a run worker computing does not heed SIGTERM). A second Ctrl-C or SIGTERM while this
        runs waits until the group is gone."""
        if self.process is None:
            return
        with _signals_deferred():
            stop_process_group(self.process, grace_s=grace_s, kill_wait_s=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def check_alive(self) -> None:
        raise_if_exited(self.process, "dagster-daemon", self.log_path, 40)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> LocalDaemon:
        self._handlers = _unwind_on_termination()
        try:
            return self.start()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            for signum, handler in self._handlers.items():
                signal.signal(signum, handler)


def _unwind_on_termination() -> dict[int, object]:
    """Make SIGTERM and SIGHUP raise SystemExit (as SIGINT raises KeyboardInterrupt), so
    ``finally`` blocks and ``with`` exits run; returns the previous handlers. Only the main
    thread can set handlers: elsewhere nothing changes."""
    def unwind(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    previous: dict[int, object] = {}
    with contextlib.suppress(ValueError):  # not the main thread
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, unwind)
    return previous


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block is done, then act on the first one that
    came (its usual handler runs). Python handlers run in the main thread, whichever thread the
    signal reached, so the handlers are swapped rather than the thread's signal mask."""
    received: list[int] = []
    previous: dict[int, object] = {}
    with contextlib.suppress(ValueError):  # not the main thread: nothing to defer
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher (a run = a process of the code server), plus the health check
    Dagster's run monitoring calls on started runs: a run whose worker process is gone (the
    daemon that launched it was stopped or crashed, the OOM killer took it) is failed, so its
    pool slots are freed and run retries re-execute it. Without it such a run stays "started"
    for ever, holding the ``pinn_training`` pool.

    The check fails the run itself (:func:`fail_run`, the status before the event) rather than
    leaving it to monitoring, whose ``report_run_failed`` stores the failure event before it
    updates the status: the run retry daemon reads new failure events and then the runs, and a
    run it reads still "started" it never retries (its cursor has moved past the event). At a
    daemon start both daemons make their first pass at the same moment, which is when a run
    whose worker died with the last daemon is failed. Monitoring, finding the run failed when it
    looks again, leaves it alone."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        pid, started = _worker_process(self._instance, run.run_id)
        if pid is None:  # run in process (execute_in_process, the CLI): nothing to watch
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker process recorded")
        if _alive(pid, started):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {pid} is running")
        message = (f"Its worker process {pid} is gone (the dagster-daemon that launched it "
                   "stopped or crashed, or the process was killed).")
        fail_run(self._instance, run.run_id, message)
        return CheckRunHealthResult(WorkerStatus.FAILED, message)


def fail_run(instance, run_id: str, message: str) -> None:
    """Fail a started run from outside it, in the order that lets run retries see it: the run's
    status first, then the failure event (whose storing also tags the run ``dagster/will_retry``).
    Does nothing to a run that is no longer started (it ended while it was being checked)."""
    import dagster as dg

    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.STARTED:
        return
    failure = dg.DagsterEvent(event_type_value=dg.DagsterEventType.RUN_FAILURE.value,
                              job_name=run.job_name, message=message)
    instance.run_storage.handle_run_event(run_id, failure)
    instance.report_run_failed(run, message)


def _worker_process(instance, run_id: str) -> tuple[int | None, float]:
    """The pid and start time the run worker recorded ("Started process for run (pid: N)")."""
    import dagster as dg

    for record in reversed(instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)):
        data = record.dagster_event.engine_event_data
        if (record.message or "").startswith("Started process for run") and "pid" in \
                data.metadata:
            return int(data.metadata["pid"].value), record.timestamp
    return None, 0.0


def _alive(pid: int, recorded_at: float) -> bool:
    """Whether ``pid`` is still the process that recorded itself at ``recorded_at`` (a pid
    reused by a younger process, or a zombie, is not)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= recorded_at + 1
    except psutil.Error:
        return False


def create_storage(paths: PlatformPaths) -> None:
    """Create the instance's and MLflow's SQLite tables here, before several run processes
    would race to (two runs creating MLflow's tables at once fail half-migrated)."""
    import dagster as dg

    from heat_platform.resources import build_resources, resolved

    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("experiments")
    resolved(build_resources(paths))["mlflow"].store().client().search_experiments()


def wait_for(daemon: LocalDaemon, probe: Callable[[], T | None], *, timeout_s: float, what: str,
             interval_s: float = 1.0) -> T:
    """:func:`~heat_platform.polling.wait_until` what the daemon's runs produce: fails at once
    if the daemon dies, and on a timeout with the instance's runs (:func:`describe_runs`) and
    the daemon's log tail."""
    def context() -> str:
        try:
            runs = describe_runs(daemon.paths)
        except Exception as error:  # the summary must not hide the timeout it explains
            runs = f"(could not read the runs: {error!r})"
        return f"runs, newest first:\n{runs}\ndaemon log:\n{daemon.log_tail()}"

    return wait_until(probe, timeout_s=timeout_s, what=what, interval_s=interval_s,
                      alive=daemon.check_alive, context=context)


# The run tags that say why a run ended as it did and what followed it (run retries)
_OUTCOME_TAGS = ("dagster/partition", "dagster/failure_reason", "dagster/will_retry",
                 "dagster/auto_retry_run_id", "dagster/parent_run_id", "dagster/retry_number")


def describe_runs(paths: PlatformPaths, limit: int = 12, messages: int = 4) -> str:
    """The newest runs of the platform's instance, one line each (id, job, status, the assets it
    selected, its outcome tags), followed for each run that did not succeed by its last
    ``messages`` failure and engine messages: what a timeout waiting on the daemon needs to say
    (was a run retried? did the retry fail, and why?)."""
    import dagster as dg

    # the events whose messages say why a run failed or was not retried (run retries and
    # monitoring write theirs as engine events)
    outcome_events = {dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY,
                      dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_CANCELED,
                      dg.DagsterEventType.ENGINE_EVENT}
    lines = []
    with dg.DagsterInstance.from_config(str(paths.dagster_home)) as instance:
        for run in instance.get_runs(limit=limit):
            assets = ",".join(sorted(key.to_user_string() for key in run.asset_selection or ()))
            tags = " ".join(f"{key.removeprefix('dagster/')}={run.tags[key][:12]}"
                            for key in _OUTCOME_TAGS if key in run.tags)
            lines.append(f"{run.run_id[:8]} {run.job_name} [{assets}] {run.status.value} {tags}")
            if run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.QUEUED):
                continue
            events = [e for e in instance.all_logs(run.run_id, of_type=outcome_events)
                      if not (e.message or "").startswith(("Started process", "Executing steps",
                                                           "Finished steps", "Process for run"))]
            for event in events[-messages:]:
                message = " ".join(f"{event.message or ''} {_error_of(event)}".split())[:300]
                step = f" {event.step_key}" if event.step_key else ""
                lines.append(f"    {event.dagster_event_type.name}{step}: {message}")
    return "\n".join(lines) or "(no runs)"


def _error_of(event) -> str:
    """The error a step failure or retry carries (its innermost cause: the code's own error,
    not Dagster's wrapper), as ``Class: message``; empty for other events."""
    error = getattr(event.dagster_event.event_specific_data, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    return f"{error.cls_name}: {error.message.strip()}" if error is not None else ""


def latest_materialization(instance, asset: str, partition: str | None = None):
    """The newest materialization of an asset partition (an AssetMaterialization), or None."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                              asset_partitions=[partition] if partition else None),
        limit=1).records
    return records[0].asset_materialization if records else None


def ticks_since(instance, sensor: str, since: float) -> int:
    """How many evaluations of ``sensor`` (a sensor's name, e.g. ``drift_retrain_sensor`` or the
    declarative automation's ``automation``) the daemon has finished since ``since``
    (``time.time()``): what to wait for before concluding that a sensor asked for nothing."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == sensor:
            return len(instance.get_ticks(
                state.instigator_origin_id, state.selector_id, after=since,
                statuses=[TickStatus.SKIPPED, TickStatus.SUCCESS]))
    return 0


class LocalServer:
    """A web UI the platform starts on this machine (its own process group, its log in the
    platform's logs folder): the MLflow UI or the Dagster webserver."""

    name = "server"
    health_path = "/"

    def __init__(self, paths: PlatformPaths, url: str) -> None:
        self.paths, self.url = paths, url.rstrip("/")
        parsed = urlparse(self.url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.log_path = paths.home / "logs" / f"{self.name}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return child_environment(HEAT_PLATFORM_HOME=str(self.paths.home),
                                 DAGSTER_HOME=str(self.paths.dagster_home))

    def start(self) -> LocalServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=PROJECT_ROOT,
                                            env=self.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> LocalServer:
        wait_until(self._answers, timeout_s=timeout_s, what=f"{self.name} at {self.url}",
                   interval_s=0.5, alive=self.check_alive,
                   context=lambda: f"{self.name} log:\n{log_tail(self.log_path)}")
        return self

    def _answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(self.url + self.health_path, timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def check_alive(self) -> None:
        raise_if_exited(self.process, self.name, self.log_path)

    def stop(self, grace_s: float = 15.0) -> None:
        if self.process is not None:
            stop_process_group(self.process, grace_s=grace_s)

    def __enter__(self) -> LocalServer:
        return self.start().wait_ready()

    def __exit__(self, *exc) -> None:
        self.stop()


class MlflowUi(LocalServer):
    """The MLflow UI on the platform's store (the links in the Dagster UI point here:
    HEAT_PLATFORM_MLFLOW_UI_URL); one worker, it is for people, not for load."""

    name = "mlflow-ui"
    health_path = "/health"

    def command(self) -> list[str]:
        return [str(Path(sys.executable).with_name("mlflow")), "server",
                "--backend-store-uri", self.paths.mlflow_tracking_uri,
                "--default-artifact-root", self.paths.mlflow_artifacts.as_uri(),
                "--host", self.host, "--port", str(self.port), "--workers", "1"]


class DagsterWebserver(LocalServer):
    """The Dagster UI on the platform's instance and code location (without the daemon: `make
    dev` runs both through `dagster dev`)."""

    name = "dagster-webserver"
    health_path = "/server_info"

    def command(self) -> list[str]:
        return [str(Path(sys.executable).with_name("dagster-webserver")),
                "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", self.host, "-p", str(self.port)]

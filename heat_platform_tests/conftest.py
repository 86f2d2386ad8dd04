"""Shared fixtures: every test gets its own platform home and its own Dagster instance."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

os.environ.setdefault("DDE_BACKEND", "pytorch")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers on two cores: the thread pools of torch and OpenBLAS in each process (and in
    # the daemons, run workers and servers it starts) at one thread each, or the two workers'
    # pools oversubscribe the cores and their idle threads spin.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Evidently imports anyio's modules (through litestar) the first time a drift report runs, and
# pytest rewrites anyio (a pytest plugin) with ast.parse at that import: inside a test's op this
# once failed with "AST constructor recursion depth mismatch", CPython 3.11's bug in the AST
# constructor's recursion counter (gh-106905). Imported here, once, before any test runs.
import evidently  # noqa: F401

from heat_platform.local import latest_materialization  # noqa: F401 (the tests import it from here)
from heat_platform.paths import PlatformPaths

# `make test` runs on two workers (pytest-xdist, --dist loadgroup --no-loadscope-reorder). The
# daemon's long stories (minutes of training each) form two chains of about equal length (on 2
# quiet cores: test_local 235-285 s + test_demo_stopped 80 s + test_daemon_restart 160-185 s;
# test_scenarios 430 s), one per worker, started first; the tests of the session's deployed
# platform share one worker, which then builds it once; everything else fills in.
CHAINS = {"test_local.py": "daemon-a", "test_demo_stopped.py": "daemon-a",
          "test_daemon_restart.py": "daemon-a", "test_scenarios.py": "daemon-b"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the groups into scopes
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = CHAINS.get(item.path.name) or ("deployed" if "deployed" in item.fixturenames
                                               else None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    order = [*dict.fromkeys(CHAINS.values()), "deployed"]
    items.sort(key=lambda item: next((order.index(mark.args[0]) for mark in
                                      item.iter_markers("xdist_group")), len(order)))


@pytest.fixture
def platform_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformPaths:
    """A fresh platform home (landing zone, store, DAGSTER_HOME, MLflow, BentoML) under tmp_path."""
    paths = PlatformPaths(tmp_path / "platform").ensure()
    monkeypatch.setenv("HEAT_PLATFORM_HOME", str(paths.home))
    monkeypatch.setenv("DAGSTER_HOME", str(paths.dagster_home))
    # Set, not deleted: mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ,
    # and monkeypatch only restores variables that existed or that it set itself, so a deleted
    # one would leak the last test's store into the next tests.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{paths.mlflow_dir / 'mlflow.db'}")
    monkeypatch.delenv("HEAT_PLATFORM_DB_URL", raising=False)  # nothing sets it at run time
    return paths


@pytest.fixture
def dagster_instance(platform_paths: PlatformPaths) -> Iterator:
    """A real Dagster instance (SQLite storage) in the test's DAGSTER_HOME."""
    import dagster as dg

    from heat_platform.instance import prepare_instance

    prepare_instance(platform_paths)
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def storage(platform_paths: PlatformPaths):
    from heat_platform.resources.storage import PlatformStorage

    return PlatformStorage(home=str(platform_paths.home))


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store, created once per session: creating its tables and running
    its migrations takes MLflow over ten seconds, copying the file takes milliseconds."""
    from heat_platform.models.mlflow_store import MlflowStore

    directory = tmp_path_factory.mktemp("mlflow-template")
    database = directory / "mlflow.db"
    MlflowStore(tracking_uri=f"sqlite:///{database}",
                artifact_root=str(directory / "artifacts")).client().search_experiments()
    return database


@pytest.fixture
def resources(platform_paths: PlatformPaths, mlflow_template: Path) -> dict:
    """The platform's resources on the test's home, with a real (SQLite) MLflow store."""
    from heat_platform.resources import build_resources, resolved

    install_mlflow_store(platform_paths, mlflow_template)
    return resolved(build_resources(platform_paths))


def install_mlflow_store(paths: PlatformPaths, template: Path) -> None:
    """Give a platform home its MLflow store: a copy of the session's empty template."""
    import shutil

    paths.mlflow_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, paths.mlflow_dir / "mlflow.db")


class SensorDriver:
    """Evaluates the landing-zone sensor against a real instance and does what the daemon does
    with the result: add the dynamic partitions, then run each requested job (in process)."""

    def __init__(self, instance, resources: dict) -> None:
        self.instance, self.resources, self.cursor = instance, resources, None

    def tick(self, execute: bool = True):
        import dagster as dg

        from heat_platform.assets import measurements, validation

        jobs = {"ingest_problem_spec": [measurements.problem_spec],
                "ingest_batch": [measurements.raw_measurements, validation.batch_validation]}
        landing_zone_sensor = measurements.landing_zone_sensor

        context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                          resources={"storage": self.resources["storage"]})
        result = landing_zone_sensor(context)
        self.cursor = result.cursor
        for request in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(request.partitions_def_name,
                                                 list(request.partition_keys))
        outcomes = []
        for run in result.run_requests or []:
            if execute:
                outcomes.append(dg.materialize(
                    jobs[run.job_name], instance=self.instance, partition_key=run.partition_key,
                    tags={**run.tags, "dagster/run_key": run.run_key},
                    resources=self.resources, raise_on_error=False))
        return result, outcomes

    def until_quiet(self, max_ticks: int = 5) -> list:
        """Tick until a tick requests nothing; returns every run's result."""
        outcomes = []
        for _ in range(max_ticks):
            result, ran = self.tick()
            outcomes.extend(ran)
            if not result.run_requests and outcomes:
                return outcomes
        return outcomes


@pytest.fixture
def sensor(dagster_instance, resources) -> SensorDriver:
    return SensorDriver(dagster_instance, resources)


def materialize(instance, resources: dict, selection: list[str], partition: str,
                run_config: dict | None = None, tags: dict | None = None, raise_on_error=True):
    """Materialize ``selection`` of the code location's assets (with their checks) for one
    partition, in process, reading upstream assets from their stored outputs."""
    import dagster as dg

    from heat_platform.definitions import defs

    return dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=selection, instance=instance,
        partition_key=partition, resources=resources, run_config=run_config, tags=tags,
        raise_on_error=raise_on_error)


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        _Receiver.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    """A local webhook receiver on a free loopback port: (url, list of received JSON bodies)."""
    import threading

    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.received = []
    yield f"http://127.0.0.1:{server.server_port}/hook", _Receiver.received
    server.shutdown()
    server.server_close()


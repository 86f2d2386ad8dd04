"""`bentoml serve` processes: what they are given, and that stopping one leaves nothing."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from heat_platform.polling import wait_until

pytestmark = pytest.mark.server

SECRETS = {"HEAT_PLATFORM_DB_URL": "postgresql://heat:pa55word@db/heat",
           "HEAT_PLATFORM_ALERT_WEBHOOK": "https://hooks.example.com/services/T0/B0/s3cr3t",
           "MLFLOW_TRACKING_URI": "postgresql://mlflow:pa55word@db/mlflow",
           "AWS_SECRET_ACCESS_KEY": "abc123"}


def environment_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        pairs = handle.read().split(b"\0")
    return dict(pair.decode(errors="replace").split("=", 1) for pair in pairs if b"=" in pair)


def test_a_server_gets_only_the_variables_it_needs(deployed, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HEAT_SERVING_LOG_SAMPLE", "0.5")
    with deployed.start() as server:
        members = server.members()
        assert len(members) >= 4  # the arbiter, two front workers, the model worker
        for pid in members:
            environment = environment_of(pid)
            assert not set(SECRETS) & set(environment), pid
            assert environment["HEAT_SERVING_LOG_SAMPLE"] == "0.5"  # its own settings do come
            assert environment["BENTOML_HOME"] == str(deployed.paths.bentoml_home)


def test_stopping_a_server_stops_the_workers_its_arbiter_left_behind(deployed):
    with deployed.start() as server:
        workers = [pid for pid in server.members() if pid != server.process.pid]
        # BentoML starts each worker in a session of its own: not in the arbiter's group
        assert all(os.getpgid(pid) != server.process.pid for pid in workers)
        os.kill(server.process.pid, signal.SIGKILL)  # the arbiter alone dies
        server.process.wait(timeout=10)
        time.sleep(1.0)
        assert sorted(server.members()) == sorted(workers)  # orphaned, alive
        # and still answering on the server's socket
        assert httpx.get(f"{server.url}/livez", timeout=5).status_code == 200
        server.stop(grace=5.0)
        assert server.members() == []
        wait_until(lambda: not _answers(server.url), timeout_s=10, what="the port to close")


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/livez", timeout=1)
        return True
    except httpx.HTTPError:
        return False

"""Fault and load tests of the serving side: a real `heat-platform serve` (HAProxy and `bentoml
serve`) on the platform the serving tests deploy, hit with faults and hostile clients. Traffic
goes to 127.0.0.1 only; every test stops what it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from heat_platform.paths import PlatformPaths
from heat_platform.polling import wait_until
from heat_platform.processes import log_tail, raise_if_exited, tagged_processes
from heat_platform.serving.rollout import live_state_path, processes_path, read_json
from heat_platform.serving.server import free_port
from heat_platform_tests.serving.conftest import deployed  # noqa: F401 (the one platform)

HEAT_PLATFORM = str(Path(sys.executable).with_name("heat-platform"))


@dataclass
class Served:
    """A running `heat-platform serve` (its own session) and what it wrote."""

    process: subprocess.Popen
    paths: PlatformPaths
    port: int
    log: Path
    seen: set[str] = field(default_factory=set)  # process tags of all it ever ran

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def live(self) -> dict:
        return read_json(live_state_path(self.paths)) or {}

    def tags(self) -> list[str]:
        """The process tags of what it runs now (its processes.json)."""
        record = read_json(processes_path(self.paths)) or {}
        if record.get("supervisor_pid") != self.process.pid:
            return []
        tags = [child["tag"] for child in record.get("processes", [])]
        self.seen.update(tags)
        return tags

    def wait_live(self, condition: Callable[[dict], bool] = lambda state: True,
                  timeout_s: float = 180) -> dict:
        def ready() -> dict | None:
            state = self.live()
            ours = state.get("supervisor_pid") == self.process.pid
            return state if ours and state.get("status") == "live" and condition(state) else None


        state = wait_until(ready, timeout_s=timeout_s, interval_s=0.1, what="a live backend",
                           alive=self._check_alive, context=self.log_tail)
        self.tags()
        return state

    def log_tail(self) -> str:
        return log_tail(self.log, 40)

    def _check_alive(self) -> None:
        raise_if_exited(self.process, "heat-platform serve", self.log, 40)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def serve(paths: PlatformPaths, log: Path, *, cwd: Path | None = None, port: int | None = None,
          **env: str) -> Served:
    """Start `heat-platform serve` on a free loopback port; ``env`` on top of this process's
    environment without its HEAT_SERVING_* variables (the settings come from ``env`` and the
    .env file in ``cwd``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HEAT_SERVING_")}
    environment.pop("HEAT_PLATFORM_ENV_FILE", None)
    port = port or free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [HEAT_PLATFORM, "--home", str(paths.home), "serve", "--port", str(port),
             "--poll", "0.5"], stdout=output, stderr=subprocess.STDOUT,
            cwd=str(cwd) if cwd else None, env={**environment, **env}, start_new_session=True)
    return Served(process, paths, port, log)


@pytest.fixture
def served(deployed, tmp_path) -> Callable[..., Served]:  # noqa: F811
    """Start `heat-platform serve` on the deployed platform (stopped after the test)."""
    started: list[Served] = []

    def start(**options) -> Served:
        started.append(serve(deployed.paths, tmp_path / f"serve-{len(started)}.log",
                             **options))
        return started[-1]

    yield start
    tags = {tag for running in started for tag in [*running.tags(), *running.seen]}
    for running in started:
        running.stop()
    left = [pid for tag in tags for pid in tagged_processes(tag)]
    assert left == [], f"left running: {left}"


def rss(tag: str) -> int:
    """Resident memory of every process carrying ``tag`` (heat_platform.processes), in bytes."""
    total = 0
    for pid in tagged_processes(tag):
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total


def raw_request(port: int, head: bytes, body: Iterable[bytes] = (), pause_s: float = 0.0,
                timeout_s: float = 30.0) -> tuple[str, int, float]:
    """Send ``head`` then the ``body`` pieces (``pause_s`` apart), stopping as soon as an answer
    comes or the server closes; returns (status line, body bytes sent, seconds taken)."""
    started = time.monotonic()
    sent, answer, closed = 0, b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as connection:
        connection.sendall(head)
        connection.setblocking(False)
        for piece in body:
            view = memoryview(piece)
            while view and not (answer or closed) and time.monotonic() - started < timeout_s:
                answer += _read_available(connection)
                try:
                    count = connection.send(view)
                except BlockingIOError:  # the server reads no more for now
                    time.sleep(0.005)
                    continue
                except OSError:
                    closed = True
                    break
                view, sent = view[count:], sent + count
            if answer or closed or time.monotonic() - started > timeout_s:
                break
            if pause_s:
                time.sleep(pause_s)
        connection.setblocking(True)
        connection.settimeout(max(1.0, timeout_s - (time.monotonic() - started)))
        try:
            while b"\r\n" not in answer:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), sent, time.monotonic() - started


def _read_available(connection: socket.socket) -> bytes:
    try:
        return connection.recv(4096)
    except (BlockingIOError, InterruptedError):
        return b""
    except OSError:
        return b""

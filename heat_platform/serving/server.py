"""`bentoml serve` processes: start on a loopback port, wait until ready, stop every process.

A server gets only the environment it needs (:func:`heat_platform.settings.serving_environment`):
the system's basics and its ``HEAT_SERVING_*`` settings, resolved here from the environment and
the dotenv file, never the platform's database URL, webhook or credentials; and a process tag
(heat_platform/processes.py), by which its workers are found and stopped even when its arbiter
died first (BentoML starts each worker in a session of its own).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from heat_platform.polling import wait_until
from heat_platform.processes import (
    PROCESS_TAG,
    log_tail,
    new_process_tag,
    raise_if_exited,
    stop_process_group,
    stop_processes,
    tagged_processes,
)
from heat_platform.serving.logs import DAY_S, prune
from heat_platform.settings import ServingSettings, serving_environment

LOG_PATTERNS = ("bentoml-*.log", "bentoml-*.log.*")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class BentoServer:
    """One running `bentoml serve <bento>`; its own process group, so stop() stops every worker."""

    bento: str
    port: int
    process: subprocess.Popen
    log_path: Path
    tag: str = ""
    host: str = "127.0.0.1"
    api_key: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        """What a client of this server sends to be let in (its API key, when it has one)."""
        return {"X-API-Key": self.api_key} if self.api_key else {}

    @classmethod
    def start(cls, bento: str, *, bentoml_home: Path, log_dir: Path, port: int | None = None,
              env: dict[str, str] | None = None, working_dir: Path | None = None,
              settings: ServingSettings | None = None) -> BentoServer:
        """Start `bentoml serve` with ``settings`` (default: the environment's and the dotenv
        file's) and ``env`` on top; deletes server logs older than the retention first."""
        settings = settings or ServingSettings.load()
        port = port or free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        prune(log_dir, LOG_PATTERNS, settings.log_retention_days * DAY_S)
        log_path = log_dir / f"bentoml-{port}-{int(time.time())}.log"
        tag = new_process_tag()
        environment = serving_environment(settings, BENTOML_HOME=str(bentoml_home),
                                          **{PROCESS_TAG: tag}, **(env or {}))
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("bentoml")), "serve", bento,
                 "--host", "127.0.0.1", "--port", str(port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                cwd=str(working_dir) if working_dir else None, start_new_session=True,
            )
        return cls(bento=bento, port=port, process=process, log_path=log_path, tag=tag,
                   api_key=environment.get("HEAT_SERVING_API_KEY") or None)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until /readyz answers 200; returns seconds waited. Raises with the log tail."""
        started = time.monotonic()
        try:
            wait_until(self.ready, timeout_s=timeout, interval_s=0.25, what="bentoml serve's "
                       "/readyz", alive=self.check_alive, context=self.log_tail)
        except TimeoutError:
            self.stop()
            raise
        return time.monotonic() - started

    def ready(self, timeout_s: float = 2.0) -> bool:
        """Does /readyz answer 200?"""
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/readyz", timeout=timeout_s).status_code == 200
        return False

    def alive(self) -> bool:
        """Is the server's main process (BentoML's arbiter) still running?"""
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise, with the log tail, when the server has exited."""
        raise_if_exited(self.process, "bentoml serve", self.log_path)

    def members(self) -> list[int]:
        """Every live process of this server: the arbiter and its workers, orphaned or not."""
        return tagged_processes(self.tag)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the arbiter (graceful: it stops its workers once their requests are done),
        SIGKILL after ``grace``; workers an arbiter that died first left behind are stopped too."""
        stop_process_group(self.process, grace_s=grace)
        stop_processes(self.members(), grace_s=min(grace, 5.0))

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> BentoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

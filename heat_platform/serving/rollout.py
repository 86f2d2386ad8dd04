"""`heat-platform serve`: the champions' bento behind a stable port, rolled out blue/green and
kept alive.

The Dagster ``deployed_bento`` asset decides *what* should be served by writing the desired
deployment (``<home>/serving/deployment.json``); this long-running supervisor makes it so:

1. HAProxy (heat_platform/serving/proxy.py) listens on the stable port and sends every request
   to the live backend, a ``bentoml serve`` process group on a free loopback port;
2. when the desired bento changes, a new backend starts next to the live one ("green"); the
   proxy switches to it once its /readyz answers, through its admin socket (no reload, no
   client connection closed), and the old one ("blue") is stopped once the requests it is
   still answering have finished (drained);
3. a live backend that dies is started again (its orphaned workers killed first): at once, then
   after 1, 2, 4, ... s (at most 60) while it keeps dying; meanwhile the proxy answers 503
   with Retry-After. A new bento that fails to start leaves the live one serving and is tried
   again after 10, 20, 40, ... s (at most 10 min), or at once when a new deployment is
   published;
4. what it starts is recorded in ``<home>/serving/processes.json``: a supervisor that was
   killed leaves process groups behind, and the next one kills them before starting its own.
   A lock file keeps two supervisors off one home.

What is live is written to ``<home>/serving/live.json`` for the CLI, the assets and the tests.
Server and proxy logs are rotated by size and deleted by age (``HEAT_SERVING_SERVER_LOG_BYTES``,
``HEAT_SERVING_LOG_RETENTION_DAYS``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from heat_platform.files import atomic_write
from heat_platform.paths import PlatformPaths
from heat_platform.processes import stop_processes, tagged_processes
from heat_platform.serving.logs import DAY_S, prune, rotate
from heat_platform.serving.proxy import SLOTS, Proxy, ProxyConfig
from heat_platform.serving.server import LOG_PATTERNS, BentoServer
from heat_platform.settings import ServingSettings

log = logging.getLogger("heat_platform.serving")

# A live backend that has served this long is healthy again: its next crash restarts at once.
STABLE_AFTER_S = 60.0
HOUSEKEEPING_EVERY_S = 30.0


def desired_deployment_path(paths: PlatformPaths) -> Path:
    return paths.serving / "deployment.json"


def live_state_path(paths: PlatformPaths) -> Path:
    return paths.serving / "live.json"


def processes_path(paths: PlatformPaths) -> Path:
    return paths.serving / "processes.json"


def write_desired_deployment(paths: PlatformPaths, deployment: dict) -> Path:
    """Atomically publish what should be served (called by the deployed_bento asset)."""
    return atomic_write(desired_deployment_path(paths),
                        json.dumps(deployment, indent=2, sort_keys=True))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class AlreadyServing(RuntimeError):
    """Another `heat-platform serve` holds this platform home."""


@dataclass
class Backoff:
    """When to try something again that failed: at once after the first failure, then after
    ``first``, 2 x ``first``, ... seconds, at most ``cap``."""

    first: float
    cap: float
    failures: int = 0
    next_at: float = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    immediate_first: bool = True

    def failed(self, now: float) -> float:
        """Record a failure at ``now``; returns the delay before the next try."""
        self.failures += 1
        exponent = self.failures - (2 if self.immediate_first else 1)
        delay = 0.0 if exponent < 0 else min(self.cap, self.first * 2 ** exponent)
        self.next_at = now + delay
        return delay

    def reset(self) -> None:
        self.failures, self.next_at = 0, 0.0


@dataclass
class Backend:
    server: BentoServer
    deployment: dict
    slot: str
    restart: bool  # started again after the live backend died (else a rollout)
    started: float = field(default_factory=time.monotonic)
    live_since: float | None = None
    orphaned: bool = False  # its arbiter died, its workers still answer: being replaced

    @property
    def bento(self) -> str:
        return self.deployment["bento"]


def deployment_key(deployment: dict) -> tuple[str, object]:
    """A deployment: its bento and when it was published (a new publication is a new try)."""
    return (deployment["bento"], deployment.get("published_at"))


class Supervisor:
    """Keeps the desired deployment served behind HAProxy on ``host:port``."""

    def __init__(self, paths: PlatformPaths, host: str = "127.0.0.1", port: int = 3100,
                 settings: ServingSettings | None = None, poll_seconds: float = 2.0,
                 start_timeout_s: float = 180.0, tick_s: float = 0.1) -> None:
        self.paths = paths
        self.host, self.port = host, port
        self.settings = settings or ServingSettings.load()
        self.poll_seconds = poll_seconds
        self.start_timeout_s = start_timeout_s
        self.tick_s = tick_s
        self.url = f"http://{host}:{port}"
        # What every backend gets: the serving log under the home, and no per-request access
        # log (the proxy is the front; HEAT_SERVING_ACCESS_LOG=1 turns it back on).
        self.backend_env = {"HEAT_SERVING_LOG_DIR": str(paths.serving / "log")}
        if "access_log" not in self.settings.model_fields_set:
            self.backend_env["HEAT_SERVING_ACCESS_LOG"] = "0"
        self.proxy: Proxy | None = None
        self.live: Backend | None = None
        self.starting: Backend | None = None
        self.crashed: dict | None = None  # the deployment of a live backend that died
        self.draining: threading.Thread | None = None
        # a live backend that dies restarts at once, then after 1, 2, 4, ... s; a new bento
        # that fails to start is tried again after 10, 20, 40, ... s
        self.restart_backoff = Backoff(first=1.0, cap=60.0)
        self.rollout_backoff: dict[tuple[str, object], Backoff] = {}
        self.proxy_backoff = Backoff(first=1.0, cap=30.0)
        self._records = threading.Lock()
        self.switches = 0
        self.restarts = 0
        self._desired: dict | None = None
        self._desired_read_at = -1e9
        self._housekept_at = -1e9
        self._stopping: list[threading.Thread] = []

    # --- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; stops everything it started on the way out."""
        self.paths.serving.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._kill_orphans()
            try:
                self._start_proxy()
                while not stop.is_set():
                    self.tick(time.monotonic())
                    stop.wait(self.tick_s)
            finally:
                self.shutdown()

    def tick(self, now: float) -> None:
        """One look at everything: the proxy, the live backend, one being started, the
        desired deployment, the logs."""
        self._watch_proxy(now)
        self._watch_live(now)
        self._watch_starting(now)
        if self.starting is None and self.proxy is not None:
            self._maybe_start(now)
        if now - self._housekept_at >= HOUSEKEEPING_EVERY_S:
            self._housekept_at = now
            self._housekeeping(now)

    def _watch_proxy(self, now: float) -> None:
        if self.proxy is not None and self.proxy.alive():
            return
        if self.proxy is not None:
            log.error("haproxy exited with %s; starting it again:\n%s",
                      self.proxy.process.returncode, self.proxy.log_tail(10))
            self.proxy.stop(grace_s=1.0)
            self.proxy = None
            self.proxy_backoff.failed(now)
        if self.proxy_backoff.due(now):
            try:
                self._start_proxy()
            except Exception:
                log.exception("haproxy did not start")
                self.proxy_backoff.failed(now)
                return
            if self.live is not None:
                self.proxy.route(self.live.slot, self.live.server.port, self.live.bento)

    def _watch_live(self, now: float) -> None:
        live = self.live
        if live is None:
            return
        if live.server.alive():
            if live.live_since is not None and now - live.live_since >= STABLE_AFTER_S:
                self.restart_backoff.reset()
            return
        if not live.orphaned and live.server.ready(timeout_s=1.0):
            # BentoML's arbiter died alone: its workers still answer on its socket, so they
            # go on serving until a replacement is ready, which then takes over (blue/green)
            log.error("the arbiter of the live backend %s (pid %d) exited with %s; its workers "
                      "still answer: starting a replacement", live.bento,
                      live.server.process.pid, live.server.process.returncode)
            live.orphaned = True
            self.crashed = live.deployment
            self.restart_backoff.failed(now)
            return
        if live.orphaned and live.server.ready(timeout_s=0.5):
            return  # orphaned workers answer until the replacement is live
        log.error("the live backend %s (pid %d) exited with %s; starting it again\n%s",
                  live.bento, live.server.process.pid, live.server.process.returncode,
                  live.server.log_tail(10))
        with contextlib.suppress(Exception):  # the proxy may be down too
            self.proxy.disable(live.slot)
        self.live = None
        self.crashed = live.deployment
        self.restart_backoff.failed(now)
        self._stop_in_background(live, "crashed")  # its orphaned workers, if any
        self._write_live_state(status="restarting")

    def _watch_starting(self, now: float) -> None:
        attempt = self.starting
        if attempt is None:
            return
        problem = None
        if not attempt.server.alive():
            problem = f"exited with {attempt.server.process.returncode}"
        elif attempt.server.ready(timeout_s=1.0):
            self._promote(attempt, now)
            return
        elif now - attempt.started > self.start_timeout_s:
            problem = f"not ready after {self.start_timeout_s:.0f} s"
        if problem is None:
            return
        self.starting = None
        backoff = (self.restart_backoff if attempt.restart
                   else self._rollout_backoff(attempt.deployment))
        delay = backoff.failed(now)
        log.error("backend %s %s; %s; next try in %.0f s\n%s", attempt.bento, problem,
                  f"{self.live.bento} stays live" if self.live else "nothing is live", delay,
                  attempt.server.log_tail(15))
        self._stop_in_background(attempt, "failed")

    def _maybe_start(self, now: float) -> None:
        if self.draining is not None and self.draining.is_alive():
            return  # the other slot is still draining
        if now - self._desired_read_at >= self.poll_seconds:
            self._desired = read_json(desired_deployment_path(self.paths))
            self._desired_read_at = now
        desired = self._desired if self._desired and "bento" in self._desired else None
        if desired is not None and (self.live is None or desired["bento"] != self.live.bento) \
                and (self.crashed is None or desired["bento"] != self.crashed["bento"]) \
                and self._rollout_backoff(desired).due(now):
            self._start(desired, restart=False)
        elif (self.live is None or self.live.orphaned) and self.crashed is not None \
                and self.restart_backoff.due(now):
            self._start(self.crashed, restart=True)

    def _start(self, deployment: dict, restart: bool) -> None:
        slot = SLOTS[0] if self.live is None or self.live.slot == SLOTS[1] else SLOTS[1]
        log.info("starting %s next to %s", deployment["bento"],
                 self.live.bento if self.live else "nothing")
        server = BentoServer.start(deployment["bento"], bentoml_home=self.paths.bentoml_home,
                                   log_dir=self.paths.serving / "servers", env=self.backend_env,
                                   settings=self.settings)
        self.starting = Backend(server, deployment, slot, restart)
        self._record_processes()

    def _promote(self, backend: Backend, now: float) -> None:
        blue = self.live
        self.proxy.route(backend.slot, backend.server.port, backend.bento)
        backend.live_since = now
        self.live, self.starting = backend, None
        self.switches += 1
        self.restarts += backend.restart
        self.crashed = None
        self.rollout_backoff.pop(deployment_key(backend.deployment), None)
        log.info("%s is live on %s (ready after %.1f s)", backend.bento, backend.server.url,
                 now - backend.started)
        self._write_live_state(ready_after=now - backend.started)
        if blue is not None:
            self.draining = threading.Thread(target=self._drain_and_stop, args=(blue,),
                                             name=f"drain-{blue.slot}", daemon=True)
            self.draining.start()

    def _drain_and_stop(self, backend: Backend) -> None:
        """Wait until the proxy has no request in flight to ``backend``, then stop it."""
        deadline = time.monotonic() + self.settings.drain_timeout
        with contextlib.suppress(Exception):
            while self.proxy.sessions(backend.slot) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.proxy.disable(backend.slot)
        backend.server.stop()
        log.info("stopped %s", backend.bento)
        self._record_processes()

    def _stop_in_background(self, backend: Backend, why: str) -> None:
        def stop() -> None:
            backend.server.stop(grace=5.0)
            log.info("stopped the %s backend %s", why, backend.bento)
            self._record_processes()

        thread = threading.Thread(target=stop, name=f"stop-{backend.slot}", daemon=True)
        thread.start()
        self._stopping.append(thread)

    def _rollout_backoff(self, deployment: dict) -> Backoff:
        key = deployment_key(deployment)
        if key not in self.rollout_backoff:
            self.rollout_backoff[key] = Backoff(first=10.0, cap=600.0, immediate_first=False)
        return self.rollout_backoff[key]

    # --- the proxy, the records, the logs -----------------------------------------------

    def _start_proxy(self) -> None:
        settings = self.settings
        config = ProxyConfig(
            host=self.host, port=self.port,
            api_key=settings.api_key.get_secret_value() if settings.api_key else None,
            max_body_bytes=settings.max_body_bytes, body_timeout_s=settings.body_timeout,
            threads=settings.proxy_threads, max_connections=settings.proxy_max_connections,
            access_log=settings.proxy_access_log)
        self.proxy = Proxy.start(self.paths.serving / "proxy", config)
        self._record_processes()
        log.info("haproxy (pid %d) listens on %s", self.proxy.process.pid, self.url)

    def _record_processes(self) -> None:
        """Record the process groups this supervisor owns (for the next one, after a crash)."""
        started = []
        if self.proxy is not None:
            started.append({"role": "proxy", "tag": self.proxy.tag,
                            "pid": self.proxy.process.pid})
        for backend in (self.live, self.starting):
            if backend is not None:
                started.append({"role": "backend", "tag": backend.server.tag,
                                "pid": backend.server.process.pid, "bento": backend.bento})
        self._write(processes_path(self.paths),
                    {"supervisor_pid": os.getpid(), "processes": started})

    def _kill_orphans(self) -> None:
        """Stop every process of what a previous supervisor recorded and left behind."""
        record = read_json(processes_path(self.paths)) or {}
        for child in record.get("processes", []):
            left = stop_processes(tagged_processes(child["tag"]), grace_s=2.0)
            if left:
                log.warning("stopped %d processes of a %s left by an earlier `heat-platform "
                            "serve` (pid %s): %s", len(left), child["role"],
                            record.get("supervisor_pid"), left)
        with contextlib.suppress(FileNotFoundError):
            processes_path(self.paths).unlink()

    def _write_live_state(self, ready_after: float | None = None, status: str = "live") -> None:
        """live.json: what is live (``status`` live), or what is being restarted after it died
        (``restarting``, no backend)."""
        live = self.live
        deployment = live.deployment if live else self.crashed
        if deployment is None:
            return
        state = {"url": self.url, "status": status, "bento": deployment["bento"],
                 "backend": live.server.url if live else None,
                 "backend_pid": live.server.process.pid if live else None,
                 "backend_tag": live.server.tag if live else None,
                 "supervisor_pid": os.getpid(),
                 "proxy_pid": self.proxy.process.pid if self.proxy else None,
                 "proxy_tag": self.proxy.tag if self.proxy else None,
                 "since": time.time(), "switches": self.switches, "restarts": self.restarts,
                 "deployment": deployment}
        if ready_after is not None:
            state["ready_after_s"] = round(ready_after, 2)
        self._write(live_state_path(self.paths), state)

    def _write(self, path: Path, content: dict) -> None:
        """Write a state file; a full disk is logged as what it is, and serving goes on."""
        try:
            with self._records:
                atomic_write(path, json.dumps(content, indent=2, sort_keys=True))
        except OSError as error:
            if error.errno == errno.ENOSPC:
                log.error("disk full: cannot write %s (serving continues; free space on %s)",
                          path, path.parent)
            else:
                log.error("cannot write %s: %s", path, error)

    def _housekeeping(self, now: float) -> None:
        settings = self.settings
        servers = self.paths.serving / "servers"
        current = [b.server.log_path for b in (self.live, self.starting) if b is not None]
        try:
            for path in current + ([self.proxy.log_path] if self.proxy else []):
                if rotate(path, settings.server_log_bytes):
                    log.info("rotated %s", path)
            prune(servers, LOG_PATTERNS, settings.log_retention_days * DAY_S, keep=current)
            if self.proxy is not None:
                prune(self.proxy.directory, ("haproxy.log.*",),
                      settings.log_retention_days * DAY_S)
        except OSError as error:
            log.error("cannot rotate the server logs (%s): %s", servers, error)

    def shutdown(self) -> None:
        """Stop the proxy (requests in flight finish), then every backend."""
        if self.proxy is not None:
            self.proxy.stop(grace_s=self.settings.drain_timeout)
            self.proxy = None
        for backend in (self.starting, self.live):
            if backend is not None:
                backend.server.stop()
        self.live = self.starting = None
        for thread in [self.draining, *self._stopping]:
            if thread is not None:
                thread.join(timeout=60)
        for path in (live_state_path(self.paths), processes_path(self.paths)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        path = self.paths.serving / "serve.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise AlreadyServing(f"another `heat-platform serve` (pid "
                                     f"{handle.read().strip() or '?'}) serves "
                                     f"{self.paths.home}") from None
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield


def serve(paths: PlatformPaths, host: str = "127.0.0.1", port: int = 3100,
          poll_seconds: float = 2.0, settings: ServingSettings | None = None) -> None:
    """Run the supervisor until SIGINT or SIGTERM, which stop everything it started."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # httpx logs every request at INFO; the supervisor's own probes are not news
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    Supervisor(paths, host, port, settings=settings, poll_seconds=poll_seconds).run(stop)

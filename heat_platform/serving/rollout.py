"""`heat-platform serve`: the champion's bento behind a stable port, rolled out blue/green.

The Dagster ``deployed_bento`` asset decides *what* should be served by writing the desired
deployment (``<home>/serving/deployment.json``); this long-running process makes it so:

1. a small reverse proxy listens on the stable port and forwards every request to the live
   backend (a ``bentoml serve`` process on a free loopback port);
2. when the desired bento changes, a new backend starts next to the live one ("green"), and
   the proxy switches to it only once its /readyz answers;
3. the old backend ("blue") is stopped after the requests it is still answering have finished.

No request fails during the switch: each request is pinned to the backend it started on.
What is live is written to ``<home>/serving/live.json`` for the CLI, the assets and the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from heat_platform.files import atomic_write
from heat_platform.paths import PlatformPaths
from heat_platform.serving.server import BentoServer

log = logging.getLogger("heat_platform.serving")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "content-length", "host"}


def desired_deployment_path(paths: PlatformPaths) -> Path:
    return paths.serving / "deployment.json"


def live_state_path(paths: PlatformPaths) -> Path:
    return paths.serving / "live.json"


def write_desired_deployment(paths: PlatformPaths, deployment: dict) -> Path:
    """Atomically publish what should be served (called by the deployed_bento asset)."""
    return atomic_write(desired_deployment_path(paths),
                        json.dumps(deployment, indent=2, sort_keys=True))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Backend:
    server: BentoServer
    deployment: dict
    in_flight: int = 0

    @property
    def bento(self) -> str:
        return self.deployment["bento"]


class Rollout:
    """Owns the backends; the proxy asks it where to send each request."""

    def __init__(self, paths: PlatformPaths, server_env: dict[str, str] | None = None,
                 drain_timeout: float = 30.0) -> None:
        self.paths = paths
        self.server_env = {"HEAT_SERVING_LOG_DIR": str(paths.serving / "log"), **(server_env or {})}
        self.drain_timeout = drain_timeout
        self.live: Backend | None = None
        self.switches = 0

    async def follow(self, poll_seconds: float, stop: asyncio.Event, proxy_url: str) -> None:
        """Roll out whatever deployment.json asks for, until ``stop`` is set."""
        while not stop.is_set():
            desired = read_json(desired_deployment_path(self.paths))
            if desired and (self.live is None or desired.get("bento") != self.live.bento):
                try:
                    await self.switch_to(desired, proxy_url)
                except Exception:  # a bad bento must not take the live one down
                    log.exception("rollout of %s failed; %s stays live", desired.get("bento"),
                                  self.live.bento if self.live else "nothing")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)

    async def switch_to(self, deployment: dict, proxy_url: str) -> None:
        log.info("starting %s next to %s", deployment["bento"], self.live.bento if self.live else "-")
        green = await asyncio.to_thread(
            BentoServer.start, deployment["bento"], bentoml_home=self.paths.bentoml_home,
            log_dir=self.paths.serving / "servers", env=self.server_env)
        try:
            ready_after = await asyncio.to_thread(green.wait_ready)
        except Exception:
            await asyncio.to_thread(green.stop)
            raise
        blue, self.live = self.live, Backend(green, deployment)
        self.switches += 1
        self._write_live_state(proxy_url, ready_after)
        log.info("%s is live on %s (ready after %.1f s)", green.bento, green.url, ready_after)
        if blue is not None:
            await self._drain_and_stop(blue)

    async def _drain_and_stop(self, backend: Backend) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while backend.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(backend.server.stop)
        log.info("stopped %s", backend.bento)

    def _write_live_state(self, proxy_url: str, ready_after: float) -> None:
        state = {"url": proxy_url, "bento": self.live.bento, "backend": self.live.server.url,
                 "backend_pid": self.live.server.process.pid, "supervisor_pid": os.getpid(),
                 "since": time.time(), "ready_after_s": round(ready_after, 2),
                 "switches": self.switches, "deployment": self.live.deployment}
        atomic_write(live_state_path(self.paths), json.dumps(state, indent=2, sort_keys=True))

    async def shutdown(self) -> None:
        if self.live is not None:
            await asyncio.to_thread(self.live.server.stop)
            self.live = None
        with contextlib.suppress(FileNotFoundError):
            live_state_path(self.paths).unlink()


def proxy_app(rollout: Rollout, poll_seconds: float, proxy_url: str):
    """The stable front: a Starlette app forwarding everything to the live backend."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    client = httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=512))
    stop = asyncio.Event()

    async def forward(request: Request) -> Response:
        backend = rollout.live
        if backend is None:
            return JSONResponse({"error": "no model deployed yet",
                                 "detail": "materialise deployed_bento in Dagster"}, 503)
        backend.in_flight += 1
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            for attempt in (1, 2):
                try:
                    upstream = await client.request(
                        request.method, backend.server.url + request.url.path,
                        params=request.query_params, content=body, headers=headers)
                    break
                except (httpx.RemoteProtocolError, httpx.ConnectError) as error:
                    # A pooled keep-alive connection closed under us: nothing was processed,
                    # and every endpoint is a pure function, so one retry is safe.
                    if attempt == 2:
                        return JSONResponse({"error": "backend unavailable", "detail": str(error)}, 502)
        finally:
            backend.in_flight -= 1
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["x-heat-bento"] = backend.bento
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(rollout.follow(poll_seconds, stop, proxy_url))
        try:
            yield
        finally:
            stop.set()
            await task
            await rollout.shutdown()
            await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def serve(paths: PlatformPaths, host: str = "127.0.0.1", port: int = 3000,
          poll_seconds: float = 2.0) -> None:
    """Run the proxy and the rollout loop until interrupted (SIGINT/SIGTERM stop everything)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    proxy_url = f"http://{host}:{port}"
    rollout = Rollout(paths, server_env=_passthrough_env())
    uvicorn.run(proxy_app(rollout, poll_seconds, proxy_url), host=host, port=port,
                log_level="warning", access_log=False)


def _passthrough_env() -> dict[str, str]:
    from heat_platform.settings import ServingSettings

    return ServingSettings.load().environment()

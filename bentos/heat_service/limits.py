"""Bounded requests: no body is read past its limit or its time, whatever the client declares.

:class:`RequestLimits` runs after the API-key check and before anything else reads a body:

* a declared ``Content-Length`` over the limit is a 413 at once, nothing read;
* a body is read here, as it arrives, and counted: past ``max_body_bytes`` (a chunked body
  that never ends, a length that lies) the request is a 413 and the rest is never read;
* the whole body must arrive within ``body_timeout_s`` seconds (a slow client): 408;
* the JSON APIs accept JSON only (or no content type, read as JSON): 415 for anything else,
  before BentoML would try to parse it (multipart without a boundary was a 500).

The body read here is handed on to the app as one message, so everything behind (the direct
route, BentoML's routes, FastAPI's) reads exactly what was counted. Behind `heat-platform
serve`, HAProxy enforces the same limits first (heat_platform/serving/proxy.py); these hold
for the service on its own (Kubernetes, a bare `bentoml serve`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from errors import answer_error
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_TYPES = (b"", b"application/json")


class RequestLimits:
    """Body size, body time and media type limits in front of the service's routes."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float,
                 json_only: Callable[[str], bool]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.json_only = json_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is not None and not length.strip().isdigit():
            await answer_error(send, 400, "bad content-length", "not a number of bytes")
            return
        if length is not None and int(length) > self.max_body_bytes:
            await self._too_large(send)
            return
        if scope["method"] == "POST" and self.json_only(scope["path"]):
            media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if media not in JSON_TYPES:
                await answer_error(send, 415, "unsupported media type",
                                   "send the body as application/json")
                return
        if not chunked and not int(length or 0):
            await self.app(scope, receive, send)  # no body to bound
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout_s)
        except TimeoutError:
            await answer_error(send, 408, "request timeout",
                               f"the body did not arrive within {self.body_timeout_s:g} s")
            return
        except _TooLarge:
            await self._too_large(send)
            return
        except _Disconnected:
            return
        await self.app(scope, replaying(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, send: Send) -> None:
        await answer_error(send, 413, "request body too large",
                           f"at most {self.max_body_bytes} bytes a request")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives an already read body first, then the client's messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay

"""Bounded requests (bentos/heat_service/limits.py) and one error shape (errors.py), in process:
each request is driven message by message, as a server hands it to the app, so an endless or a
slow body is really endless or slow."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from heat_platform_tests.serving.service_code import service_module

limits = service_module("limits")
errors = service_module("errors")

LIMIT = 100_000
CHUNK = 16_384


def echo_app(seen: list[bytes]) -> Starlette:
    """Stands where the service's routes are: answers with the size of the body it read."""
    async def echo(request: Request) -> Response:
        body = await request.body()
        seen.append(body)
        return JSONResponse({"bytes": len(body)})

    return Starlette(routes=[Route("/predict", echo, methods=["POST", "GET"]),
                             Route("/predict-binary", echo, methods=["POST"])])


def drive(app, *, method: str = "POST", path: str = "/predict", headers: dict | None = None,
          body=None, timeout_s: float = 10.0) -> tuple[int | None, dict, int]:
    """One request through ``app``: ``body`` is bytes, or an async iterator of chunks (sent as
    they come, more_body until it ends). Returns (status, JSON answer, chunks received)."""
    sent: list[dict] = []
    pulled = itertools.count()
    chunks = body if body is not None and not isinstance(body, bytes) else None
    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "root_path": ""}

    async def receive() -> dict:
        index = next(pulled)
        if chunks is None:
            if index == 0:
                return {"type": "http.request", "body": body or b"", "more_body": False}
            await asyncio.sleep(3600)  # a client that sent everything waits for the answer
        try:
            return {"type": "http.request", "body": await anext(chunks), "more_body": True}
        except StopAsyncIteration:
            return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout_s)

    asyncio.run(run())
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return (start["status"] if start else None, json.loads(payload) if payload else {},
            next(pulled))


def limited(seen: list[bytes], timeout_s: float = 5.0):
    return limits.RequestLimits(echo_app(seen), max_body_bytes=LIMIT, body_timeout_s=timeout_s,
                                json_only=lambda path: path == "/predict")


async def endless(chunk: bytes = b"x" * CHUNK):
    while True:
        yield chunk


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    seen: list[bytes] = []
    status, answer, pulled = drive(limited(seen), headers={"content-length": "2000000000"},
                                   body=endless())
    assert status == 413 and answer["error"] == "request body too large"
    assert pulled == 0 and seen == []  # not one byte read, the app never ran


def test_an_endless_chunked_body_is_cut_at_the_limit():
    seen: list[bytes] = []
    status, answer, pulled = drive(limited(seen), headers={"transfer-encoding": "chunked"},
                                   body=endless())
    assert status == 413 and str(LIMIT) in answer["detail"]
    assert pulled == LIMIT // CHUNK + 1  # read up to the limit, not one chunk more
    assert seen == []


def test_a_body_that_lies_about_its_length_is_cut_too():
    seen: list[bytes] = []
    status, _, _ = drive(limited(seen), headers={"content-length": "10"}, body=endless())
    assert status == 413 and seen == []


def test_a_slow_body_times_out():
    async def slow():
        yield b"{"
        await asyncio.sleep(3600)
        yield b"}"

    seen: list[bytes] = []
    started = time.monotonic()
    status, answer, _ = drive(limited(seen, timeout_s=0.3), headers={"content-length": "2"},
                              body=slow())
    assert status == 408 and "0.3 s" in answer["detail"]
    assert time.monotonic() - started < 5 and seen == []


def test_json_routes_refuse_other_media_types_before_reading():
    seen: list[bytes] = []
    for media in ("multipart/form-data", "application/x-www-form-urlencoded", "text/plain"):
        status, answer, pulled = drive(limited(seen), headers={"content-type": media,
                                                               "content-length": "5"},
                                       body=b"x=1&y")
        assert (status, answer["error"], pulled) == (415, "unsupported media type", 0)
    assert seen == []


def test_requests_within_the_limits_reach_the_app_whole():
    seen: list[bytes] = []
    body = json.dumps({"points": [[0.1, 0.2, 0.3]] * 1000}).encode()
    for headers in ({"content-type": "application/json", "content-length": str(len(body))},
                    {"transfer-encoding": "chunked"}):
        async def chunks():
            for start in range(0, len(body), 1000):
                yield body[start:start + 1000]

        status, answer, _ = drive(limited(seen), headers=headers, body=chunks())
        assert (status, answer) == (200, {"bytes": len(body)})
    # other media types where the route is not a JSON one; no body at all
    status, _, _ = drive(limited(seen), path="/predict-binary", body=b"\0" * 12,
                         headers={"content-type": "application/octet-stream",
                                  "content-length": "12"})
    assert status == 200
    assert drive(limited(seen), method="GET")[0] == 200
    assert [len(body) for body in seen] == [len(body), len(body), 12, 0]


def test_a_bad_content_length_is_a_400():
    status, answer, _ = drive(limited([]), headers={"content-length": "12abc"}, body=b"x")
    assert status == 400 and answer["error"] == "bad content-length"


def shaped_app() -> errors.ErrorBodies:
    async def bentoml_not_found(request: Request) -> Response:
        # what BentoML 1.4's API wrapper answers for its 4xx exceptions
        return JSONResponse([{"error": "unknown experiment 'x'"}], 404)

    async def listed(request: Request) -> Response:
        return JSONResponse([{"a": 1}])

    app = Starlette(routes=[Route("/bentoml", bentoml_not_found, methods=["POST"]),
                            Route("/listed", listed),
                            Route("/text", lambda request: PlainTextResponse("teapot", 418))])
    return errors.ErrorBodies(app)


@pytest.mark.parametrize(("method", "path", "status", "expected"), [
    ("POST", "/bentoml", 404, {"error": "unknown experiment 'x'"}),
    ("GET", "/nowhere", 404, {"error": "Not Found"}),
    ("GET", "/bentoml", 405, {"error": "Method Not Allowed"}),
    ("GET", "/text", 418, {"error": "teapot"}),
    ("GET", "/listed", 200, [{"a": 1}]),  # answers that are not errors pass untouched
])
def test_every_error_answer_has_the_documented_shape(method, path, status, expected):
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [], "http_version": "1.1", "scheme": "http", "root_path": "",
             "server": ("t", 80), "client": ("c", 1)}
    asyncio.run(shaped_app()(scope, receive, send))
    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    headers = dict(start["headers"])
    assert start["status"] == status and json.loads(body) == expected
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    if status == 405:
        assert headers[b"allow"] == b"POST"  # what a client needs to know is kept

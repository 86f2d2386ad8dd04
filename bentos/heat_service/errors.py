"""One error shape for every error answer, and an OpenAPI document that says so.

Every error the service answers is ``{"error": <what went wrong>, "detail": <a hint, or the
validation problems>}`` (``schemas.Error``), whichever part of the service wrote it:

* BentoML's routes already answer validation errors that way (400), but answer their 4xx
  exceptions (an unknown experiment's 404) as a one-element *list* of it (BentoML 1.4 builds
  that body from a tuple), and Starlette answers an unknown path (404) or method (405) in
  plain text: :class:`ErrorBodies` rewrites both into the shape;
* FastAPI's routes answer ``{"detail": ...}``: :func:`install_error_handlers` answers in the
  service's shape instead;
* the request limits and the API key answer in it (limits.py, auth.py), and so does the proxy
  of `heat-platform serve`.

:func:`document` rewrites BentoML's OpenAPI document to match what the service answers: the one
error schema for every error status each operation can return (401, 404, 408, 413, 415, ...,
none of which BentoML documents for the FastAPI routes), a nullable ``experiment`` in the JSON
bodies (BentoML drops the null its input model allows) and the binary route's answer. It is
served at /docs.json by :class:`OpenApiDocument` in place of BentoML's.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ERROR_REF = "#/components/schemas/Error"
# BentoML's and FastAPI's own error schemas, all replaced by the service's one.
REPLACED = ("InvalidArgument", "NotFound", "InternalServerError", "HTTPValidationError",
            "ValidationError")
DESCRIPTIONS = {
    400: "Bad request: a body that does not validate (BentoML's routes) or is not readable",
    401: "Missing or invalid API key (when HEAT_SERVING_API_KEY is set)",
    404: "Unknown experiment or model",
    408: "The request's body did not arrive within HEAT_SERVING_BODY_TIMEOUT seconds",
    413: "Body over HEAT_SERVING_MAX_BODY_BYTES, or more points than HEAT_SERVING_MAX_POINTS",
    415: "Unsupported media type",
    422: "Query or body that does not validate (FastAPI's routes)",
    500: "Unexpected error (see the server log)",
    503: "Overloaded, or no model server live behind the proxy yet",
    504: "The model did not answer in time",
}
BODY_STATUSES = (400, 401, 404, 408, 413, 415, 422, 500, 503, 504)
QUERY_STATUSES = (401, 404, 422, 500, 503, 504)


async def answer_error(send: Send, status: int, error: str, detail: str,
                       headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send an error answer in the service's shape from an ASGI middleware."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """FastAPI's HTTP and validation errors answered in the service's shape."""

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, error.status_code,
                            headers=getattr(error, "headers", None))

    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [{key: value for key, value in problem.items()
                     if key in ("type", "loc", "msg")} for problem in error.errors()]
        count = len(problems)
        return JSONResponse({"error": f"{count} validation error{'s' * (count != 1)}",
                             "detail": problems}, 422)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class ErrorBodies:
    """Error answers in the service's shape: a one-element JSON list of an object (BentoML's 4xx
    exceptions) is answered with the object, a text body (Starlette's 404 and 405) as
    ``{"error": <the text>}``, headers kept; every other answer passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []

        async def fixing_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message  # an error: its body is looked at before anything is sent
                return
            if held is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            content_type = next((value for key, value in held["headers"]
                                 if key.lower() == b"content-type"), b"")
            if b"json" in content_type:
                body = _unwrapped(body)
            else:
                text = body.decode(errors="replace").strip() or f"HTTP {held['status']}"
                body = json.dumps({"error": text}).encode()
            headers = [(key, value) for key, value in held["headers"]
                       if key.lower() not in (b"content-length", b"content-type")]
            await send({**held, "headers": [
                *headers, (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, fixing_send)


def _unwrapped(body: bytes) -> bytes:
    if not body.startswith(b"["):
        return body
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        return json.dumps(value[0]).encode()
    return body


def document(spec: dict[str, Any], error_schemas: dict[str, Any], binary_headers: list[str],
             api_key: bool = False) -> dict[str, Any]:
    """BentoML's OpenAPI document (``spec``) rewritten to describe what the service answers;
    ``error_schemas``: the JSON schemas of schemas.Error and what it refers to; ``api_key``:
    whether the service wants one (then every API operation says how to send it)."""
    spec = copy.deepcopy(spec)
    # The schemas are JSON Schema 2020-12 (pydantic 2: prefixItems, type null): OpenAPI 3.1's.
    spec["openapi"] = "3.1.0"
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in REPLACED:
        schemas.pop(name, None)
    schemas.update(error_schemas)
    _replace_refs(spec, {f"#/components/schemas/{name}" for name in REPLACED})
    if api_key:
        spec["components"]["securitySchemes"] = {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if operation.get("tags") == ["Infrastructure"]:
                continue
            if api_key:
                operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
            statuses = QUERY_STATUSES if method == "get" else BODY_STATUSES
            responses = {str(code): value for code, value in operation["responses"].items()
                         if str(code).startswith("2")}
            for status in statuses:
                responses[str(status)] = {"description": DESCRIPTIONS[status], "content": {
                    "application/json": {"schema": {"$ref": ERROR_REF}}}}
            operation["responses"] = responses
            if "requestBody" in operation:
                operation["requestBody"]["required"] = True  # no body is a 400 / 422
            body = operation.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema", {})
            if "experiment" in body.get("properties", {}):
                experiment = body["properties"]["experiment"]
                nullable = {key: value for key, value in experiment.items()
                            if key not in ("type", "maxLength")}
                nullable["anyOf"] = [{"type": "string", "maxLength": 64}, {"type": "null"}]
                body["properties"]["experiment"] = nullable
            if path == "/predict-binary":
                responses["200"] = {
                    "description": "n little-endian float32 u values (NaN where the model has "
                                   "no finite value), then n in_domain bytes (1 or 0)",
                    "headers": {name: {"schema": {"type": "string"}} for name in binary_headers},
                    "content": {"application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}}}}
    return spec


def _replace_refs(node: Any, replaced: set[str]) -> None:
    if isinstance(node, dict):
        if node.get("$ref") in replaced:
            node["$ref"] = ERROR_REF
        for value in node.values():
            _replace_refs(value, replaced)
    elif isinstance(node, list):
        for value in node:
            _replace_refs(value, replaced)


class OpenApiDocument:
    """``GET <path>`` answered with ``build()``'s document (built once); the rest passes."""

    def __init__(self, app: ASGIApp, path: str, build: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.path = path
        self.build = build
        self._body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self._body is None:
            self._body = json.dumps(self.build()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self._body)).encode())]})
        await send({"type": "http.response.body", "body": self._body})

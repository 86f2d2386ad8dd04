"""The direct route in front of BentoML's POST /predict (bentos/heat_service/direct_route.py),
in process in front of a plain Starlette app that stands where BentoML's routes are: bodies that
validate are answered directly, everything else reaches the app behind with its body intact."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from heat_platform_tests.serving.service_code import service_module

direct_route = service_module("direct_route")


class Body(BaseModel):
    points: list[tuple[float, float, float]] = Field(min_length=1)
    experiment: str | None = None


@pytest.fixture
def client():
    behind, answered = [], []

    async def bentoml_route(request: Request) -> JSONResponse:
        behind.append(await request.body())
        return JSONResponse({"route": "behind"}, status_code=400)

    async def answer(body: Body) -> bytes | None:
        if body.experiment == "unknown":
            return None  # declined: the route behind answers
        if body.experiment == "broken":
            raise RuntimeError("the model failed")
        answered.append(body)
        return json.dumps({"route": "direct", "n": len(body.points)}).encode()

    app = Starlette(routes=[Route("/predict", bentoml_route, methods=["POST", "PUT"]),
                            Route("/other", bentoml_route, methods=["POST"])])
    app.add_middleware(direct_route.DirectJsonRoute, path="/predict", input_model=Body,
                       answer=answer)
    return InProcess(app), behind, answered


class InProcess:
    """HTTP requests to an ASGI app in this process."""

    def __init__(self, app) -> None:
        self.transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def request(self, method: str, path: str, **options) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as http:
                return await http.request(method, path, **options)

        return asyncio.run(send())

    def post(self, path: str, **options) -> httpx.Response:
        return self.request("POST", path, **options)


def test_valid_bodies_are_answered_directly(client):
    http, behind, answered = client
    for headers in ({}, {"content-type": "application/json; charset=utf-8"}):
        response = http.post("/predict", json={"points": [[0.1, 0.2, 0.3]] * 3}, headers=headers)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"route": "direct", "n": 3}
    no_type = http.post("/predict", content=b'{"points": [[1, 2, 3]]}',
                        headers={"content-type": ""})
    assert no_type.json() == {"route": "direct", "n": 1}  # BentoML reads it as JSON too
    assert behind == [] and len(answered) == 3


@pytest.mark.parametrize("body", [
    b'{"points": []}', b'{"points": [[0.1, 0.2]]}', b'{"points": "0.1,0.2,0.3"}', b"{not json",
    b"", b'{"points": [[0.1, 0.2, 0.3]], "experiment": "unknown"}',
])
def test_anything_else_reaches_the_route_behind_with_its_body(client, body):
    http, behind, answered = client
    response = http.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.json() == {"route": "behind"}
    assert behind == [body] and answered == []


@pytest.mark.parametrize(("method", "path", "content_type"), [
    ("PUT", "/predict", "application/json"),
    ("POST", "/other", "application/json"),
    ("POST", "/predict", "multipart/form-data; boundary=x"),
])
def test_other_methods_paths_and_media_types_pass_through(client, method, path, content_type):
    http, behind, answered = client
    body = b'{"points": [[0.1, 0.2, 0.3]]}'
    response = http.request(method, path, content=body, headers={"content-type": content_type})
    assert response.json() == {"route": "behind"}
    assert behind == [body] and answered == []


def test_a_failing_answer_is_bentomls_500_not_a_crash(client):
    http, behind, _ = client
    response = http.post("/predict", json={"points": [[0.1, 0.2, 0.3]], "experiment": "broken"})
    assert response.status_code == 500
    assert response.json() == {"error": "An unexpected error has occurred, please check the "
                                        "server log."}
    assert behind == []  # not run a second time behind it

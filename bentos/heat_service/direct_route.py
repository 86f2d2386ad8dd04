"""One BentoML JSON API answered without BentoML's per-request machinery, whenever it can be.

For every ``@bentoml.api`` request BentoML routes, parses the body into the API's input model,
calls the method through its API wrapper, validates the returned output model and serialises
it into a response object. For a 1000-point ``POST /predict`` that machinery cost about a fifth
of the CPU a front worker's ASGI app spent on the request (1.68 against 1.31 ms in process,
bench/serving.py). :class:`DirectJsonRoute`
answers the requests of one API path that validate against that API's own input model
(BentoML's ``input_spec``, so exactly the bodies BentoML accepts) by calling an answer function.
Every other request, including those the answer function declines (it returns ``None``) and
those that do not validate, goes on to BentoML's route with its body replayed: errors and
their messages stay BentoML's own.

Added with ``Service.add_asgi_middleware``, it runs inside BentoML's metrics, access-log,
timeout and concurrency middlewares, and after any service middleware added before it (the
API-key check).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from limits import replaying
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Answer = Callable[[Any], Awaitable[bytes | None]]

JSON = "application/json"
# What BentoML answers when an API raises something other than a validation or BentoML error.
UNEXPECTED = (b'{"error":"An unexpected error has occurred, please check the server log."}')

logger = logging.getLogger("bentoml.heat_service")


class DirectJsonRoute:
    """``POST <path>`` with a JSON body that ``input_model`` validates: ``answer(validated)``'s
    bytes as the JSON response; anything else: the wrapped app, with the body replayed."""

    def __init__(self, app: ASGIApp, path: str, input_model: type[BaseModel],
                 answer: Answer) -> None:
        self.app = app
        self.path = path
        self.input_model = input_model
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._handles(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:  # the client went away before sending all of it
            return
        try:
            request = self.input_model.model_validate_json(body or b"{}")
        except ValidationError:
            request = None
        try:
            answer = None if request is None else await self.answer(request)
        except Exception:
            logger.exception("POST %s failed", self.path)
            await Response(UNEXPECTED, 500, media_type=JSON)(scope, receive, send)
            return
        if answer is None:
            await self.app(scope, replaying(body, receive), send)
            return
        await Response(answer, media_type=JSON)(scope, receive, send)

    def _handles(self, scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return False
        # BentoML reads a body without a content type as JSON, and so does this route.
        content_type = next((value for key, value in scope["headers"] if key == b"content-type"),
                            b"")
        return content_type.split(b";")[0].strip().lower() in (b"", JSON.encode())

"""Optional API-key authentication, checked before any request body is read or validated."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Probes and metrics stay open so Kubernetes and Prometheus need no secret.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})


class ApiKeyMiddleware:
    """Accepts ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``; anything else is a 401."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._authorised(scope):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "missing or invalid API key",
                           "detail": "send the key as 'X-API-Key' or 'Authorization: Bearer'"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-api-key")
        if given is None and headers.get(b"authorization", b"").lower().startswith(b"bearer "):
            given = headers[b"authorization"][7:].strip()
        return given is not None and hmac.compare_digest(given, self.api_key)

"""Alerts: a JSON POST to a configurable webhook (Slack-, Teams- or Alertmanager-style relays
accept it); off when no URL is configured. Delivery failures are logged, never raised: an
unreachable alert receiver must not fail the asset that noticed the problem.

A webhook URL carries its token in its path or query (Slack's ``/services/T.../B.../<secret>``),
so it is never written anywhere whole: logs and errors name it by :func:`redact_url` (scheme,
host and port), and httpx's own request log line, which holds the full URL, is never emitted
for it.
"""

from __future__ import annotations

import datetime as dt
import logging
from urllib.parse import urlsplit

log = logging.getLogger("heat_platform.alerts")


def redact_url(url: str) -> str:
    """``url`` without what may be secret (user info, path, query, fragment)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<webhook>"
    return f"{parts.scheme or '?'}://{host}{port}/***"


class _WithoutUrl(logging.Filter):
    """Drops httpx's per-request log line when it names ``url`` (it prints the whole URL)."""

    def __init__(self, url: str) -> None:
        import httpx

        super().__init__()
        self.urls = {url, str(httpx.URL(url))}  # as given, and as httpx writes it

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(str(arg) in self.urls for arg in args)


def send_alert(url: str | None, *, severity: str, title: str, experiment: str,
               details: dict, links: dict[str, str] | None = None,
               timeout_s: float = 5.0) -> bool:
    """POST the alert; returns whether the receiver accepted it (False when off)."""
    if not url:
        return False
    import httpx

    payload = {"source": "heat-platform", "severity": severity, "title": title,
               "experiment": experiment, "at": dt.datetime.now(dt.UTC).isoformat(),
               "details": details, "links": links or {}}
    quiet = _WithoutUrl(url)
    httpx_log = logging.getLogger("httpx")
    httpx_log.addFilter(quiet)
    try:
        response = httpx.post(url, json=payload, timeout=timeout_s)
        response.raise_for_status()
        return True
    except httpx.HTTPStatusError as error:
        reason = f"HTTP {error.response.status_code}"
    except httpx.HTTPError as error:
        # the exception's text may quote the URL: keep its kind only, and the cause's text
        # with the URL taken out
        cause = str(error).replace(url, redact_url(url))
        reason = f"{type(error).__name__}: {cause}" if cause else type(error).__name__
    finally:
        httpx_log.removeFilter(quiet)
    log.warning("alert %r not delivered to %s: %s", title, redact_url(url), reason)
    return False

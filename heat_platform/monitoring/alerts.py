"""Alerts: a JSON POST to a configurable webhook (Slack-, Teams- or Alertmanager-style relays
accept it); off when no URL is configured. Delivery failures are logged, never raised: an
unreachable alert receiver must not fail the asset that noticed the problem."""

from __future__ import annotations

import datetime as dt
import logging

log = logging.getLogger("heat_platform.alerts")


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
    try:
        response = httpx.post(url, json=payload, timeout=timeout_s)
        response.raise_for_status()
        return True
    except httpx.HTTPError as error:
        log.warning("alert %r not delivered to %s: %s", title, url, error)
        return False

"""Alert hook as a Dagster resource: off unless a webhook URL is configured
(HEAT_PLATFORM_ALERT_WEBHOOK)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class AlertWebhook(dg.ConfigurableResource):
    url: str = Field(default="", description="Webhook receiving JSON alerts; empty: off.")
    timeout_s: float = Field(default=5.0, description="Seconds to wait for the receiver.")

    def send(self, *, severity: str, title: str, experiment: str, details: dict,
             links: dict[str, str] | None = None) -> bool:
        from heat_platform.monitoring.alerts import send_alert

        return send_alert(self.url or None, severity=severity, title=title,
                          experiment=experiment, details=details, links=links,
                          timeout_s=self.timeout_s)

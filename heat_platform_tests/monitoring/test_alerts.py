"""Webhook URLs carry tokens: no log line and no error names one whole."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from heat_platform.monitoring.alerts import redact_url, send_alert

TOKEN = "T0KEN-s3cr3t"


class _Refusing(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing():
    """A webhook receiver that answers 403 (a revoked token)."""
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_urls_are_redacted_to_their_host():
    assert redact_url(f"https://hooks.slack.com/services/T0/B0/{TOKEN}?x=1") == \
        "https://hooks.slack.com/***"
    assert redact_url(f"https://user:{TOKEN}@relay:8443/a") == "https://relay:8443/***"
    assert redact_url("not a url [") == "<webhook>" or TOKEN not in redact_url("not a url [")


def test_no_log_line_names_the_webhook(receiver, refusing, caplog):
    url, received = receiver
    with caplog.at_level(logging.DEBUG):
        assert send_alert(f"{url}/services/{TOKEN}", severity="warning", title="drift",
                          experiment="e", details={})
        assert not send_alert(f"{refusing}/services/{TOKEN}", severity="warning",
                              title="drift", experiment="e", details={})
        assert not send_alert(f"http://127.0.0.1:9/services/{TOKEN}", severity="warning",
                              title="drift", experiment="e", details={}, timeout_s=1)
    assert len(received) == 1
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert TOKEN not in text
    warnings = [r.getMessage() for r in caplog.records if r.name == "heat_platform.alerts"]
    assert len(warnings) == 2
    assert "HTTP 403" in warnings[0] and "http://127.0.0.1:" in warnings[0]
    assert "ConnectError" in warnings[1] and "/***" in warnings[1]

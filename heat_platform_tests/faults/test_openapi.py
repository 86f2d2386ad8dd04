"""schemathesis (every check, schemathesis.toml) against the service's own OpenAPI document:
no 5xx, every status and body the service answers is the documented one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("api_key", [None, "fuzz-key"], ids=["open", "with a key"])
def test_the_service_keeps_its_openapi_contract(deployed, api_key, tmp_path):
    env = {"HEAT_SERVING_API_KEY": api_key} if api_key else {}
    with deployed.start(**env) as server:
        command = [SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{server.url}/docs.json",
                   "--max-examples", "40", "--workers", "1", "--seed", "24",
                   "--continue-on-failure"]
        for name, value in server.headers.items():
            command += ["--header", f"{name}: {value}"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=420,
                             check=False, cwd=tmp_path)
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.split("Test cases:")[-1], summary

"""deployed_bento publishes a smoke-tested bento; `heat-platform serve` rolls it out blue/green."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from heat_platform.polling import wait_until
from heat_platform.serving.bento import build_bento
from heat_platform.serving.deploy import served_model
from heat_platform.serving.kubernetes import front_workers
from heat_platform.serving.rollout import (
    desired_deployment_path,
    live_state_path,
    read_json,
    write_desired_deployment,
)
from heat_platform.serving.server import free_port
from heat_platform_tests.conftest import latest_materialization
from heat_platform_tests.serving.conftest import EXPERIMENT, pids_alive

# every test here talks to a real `bentoml serve` on loopback
pytestmark = pytest.mark.server


def test_the_deployed_bento_is_smoke_tested_published_and_audited(deployed):
    metadata = latest_materialization(deployed.instance, "deployed_bento", EXPERIMENT).metadata
    assert metadata["bento"].value == deployed.bento
    assert metadata["smoke test: max |u - MLflow u|"].value <= 1e-5
    assert metadata["smoke test: ready after s"].value > 0
    assert f"{deployed.champion.model_name} v{deployed.champion.version}" in metadata["serves"].value

    desired = read_json(desired_deployment_path(deployed.paths))
    assert desired["bento"] == deployed.bento and desired["default"] == EXPERIMENT
    assert desired["experiments"][EXPERIMENT]["model_version"] == deployed.champion.version
    assert desired["experiments"][EXPERIMENT]["data_version"] == deployed.champion.data_version

    deployment, service = yaml.safe_load_all(Path(metadata["kubernetes manifest"].value).read_text())
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    workers = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert workers["HEAT_SERVING_WORKERS"] == str(front_workers(container["resources"]["limits"]["cpu"]))

    (entry,) = [e for e in _audit(deployed) if e.action == "deploy"]
    assert entry.to_version == deployed.champion.version and deployed.bento in entry.reasons[0]


def test_front_workers_follow_the_pods_cpu_limit():
    assert [front_workers(cpu) for cpu in ("500m", "1", "1.5", "2", "4000m")] == [1, 1, 1, 2, 4]


def _audit(deployed):
    from heat_platform.data.catalog import Catalog

    return Catalog(deployed.paths.catalog_url).audit_trail(EXPERIMENT)


class Traffic(threading.Thread):
    """A bounded stream of requests to the stable port, recording every outcome."""

    def __init__(self, url: str, max_requests: int = 20_000, max_seconds: float = 240) -> None:
        super().__init__(daemon=True)
        self.url, self.max_requests, self.max_seconds = url, max_requests, max_seconds
        self.stop = threading.Event()
        self.outcomes: list[tuple[int, str]] = []  # (status, bento) or (0, error)

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self.stop.is_set() and len(self.outcomes) < self.max_requests \
                    and time.monotonic() < deadline:
                try:
                    response = client.get("/predict-temperature",
                                          params={"x": 0.5, "y": 0.5, "t": 0.1})
                    self.outcomes.append((response.status_code,
                                          response.headers.get("x-heat-bento", "")))
                except httpx.HTTPError as error:
                    self.outcomes.append((0, repr(error)))


def test_a_new_bento_rolls_out_blue_green_without_failing_a_request(deployed):
    paths, port = deployed.paths, free_port()
    supervisor = subprocess.Popen(
        [str(Path(sys.executable).with_name("heat-platform")), "--home", str(paths.home),
         "serve", "--port", str(port), "--poll", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    traffic = Traffic(f"http://127.0.0.1:{port}")
    try:
        blue = wait_until(lambda: (read_json(live_state_path(paths)) or {}).get("bento")
                          == deployed.bento and read_json(live_state_path(paths)),
                          timeout_s=120, what="the first bento to be live")
        traffic.start()
        wait_until(lambda: len(traffic.outcomes) >= 50, timeout_s=30, what="traffic")

        # a new champion's bento is published (as deployed_bento does)
        model = served_model(deployed.champion)
        green_tag = build_bento(paths.bentoml_home, [model], EXPERIMENT, "bluegreen-test")
        write_desired_deployment(paths, {**read_json(desired_deployment_path(paths)),
                                         "bento": green_tag})
        green = wait_until(lambda: (read_json(live_state_path(paths)) or {}).get("bento")
                           == green_tag and read_json(live_state_path(paths)),
                           timeout_s=120, what="the green bento to be live")
        before = len(traffic.outcomes)
        wait_until(lambda: len(traffic.outcomes) >= before + 50, timeout_s=30, what="traffic")
        wait_until(lambda: not pids_alive([blue["backend_pid"]]), timeout_s=60,
                   what="the blue server to stop")
    finally:
        traffic.stop.set()
        traffic.join(timeout=30)
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(timeout=10)

    failures = [o for o in traffic.outcomes if o[0] != 200]
    served_by = {bento for status, bento in traffic.outcomes if status == 200}
    assert not failures, (len(failures), failures[:5])
    assert served_by == {deployed.bento, green_tag}, served_by
    assert green["switches"] == 2 and green["url"] == f"http://127.0.0.1:{port}"
    # stopping the supervisor stops the live server too, and forgets what was live
    assert not pids_alive([green["backend_pid"]])
    assert not live_state_path(paths).exists()
    print(json.dumps({"requests": len(traffic.outcomes), "failures": len(failures)}))

"""deployed_bento publishes a smoke-tested bento; `heat-platform serve` rolls it out blue/green."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

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
from heat_platform_tests.serving.traffic import Traffic

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


def test_a_new_bento_rolls_out_blue_green_without_failing_a_request(deployed):
    paths, port = deployed.paths, free_port()
    supervisor = subprocess.Popen(
        [str(Path(sys.executable).with_name("heat-platform")), "--home", str(paths.home),
         "serve", "--port", str(port), "--poll", "0.5"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    traffic = Traffic(f"http://127.0.0.1:{port}")  # one keep-alive client, back to back
    try:
        blue = wait_until(lambda: (read_json(live_state_path(paths)) or {}).get("bento")
                          == deployed.bento and read_json(live_state_path(paths)),
                          timeout_s=120, what="the first bento to be live")
        traffic.start()
        wait_until(lambda: traffic.count() >= 50, timeout_s=30, what="traffic")

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
        traffic.stop()
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(timeout=10)

    failures = traffic.failures()
    served_by = {outcome.bento for outcome in traffic.outcomes if outcome.status == 200}
    assert not failures, (len(failures), failures[:5])
    assert served_by == {deployed.bento, green_tag}, served_by
    assert green["switches"] == 2 and green["url"] == f"http://127.0.0.1:{port}"
    assert green["restarts"] == 0
    # stopping the supervisor stops the live server too, and forgets what was live
    assert not pids_alive([green["backend_pid"]])
    assert not live_state_path(paths).exists()
    print(json.dumps({"requests": len(traffic.outcomes), "failures": len(failures)}))


def test_a_deploy_smoke_tests_with_the_api_key_from_the_dotenv_file(deployed, tmp_path,
                                                                      monkeypatch):
    """The key in .env reaches the smoke-test server and the smoke test alike (the smoke test
    used to post without it, so with a key every deploy failed with 401)."""
    from heat_platform.models.registry import ModelRegistry
    from heat_platform.serving.deploy import deploy

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEAT_PLATFORM_ENV_FILE", raising=False)
    monkeypatch.delenv("HEAT_SERVING_API_KEY", raising=False)
    (tmp_path / ".env").write_text("HEAT_SERVING_API_KEY=smoke-key\n")
    model = served_model(deployed.champion)
    registry = ModelRegistry(deployed.resources["mlflow"].store(),
                             deployed.resources["storage"].catalog())
    deployment = deploy(deployed.paths, [model], check=model, registry=registry)
    assert deployment.bento == deployed.bento
    assert deployment.smoke.max_abs_difference <= 1e-5
    # the smoke-test server did want the key: its log shows no request let in without it
    log = max((deployed.paths.serving / "servers").glob("bentoml-*.log"),
              key=lambda path: path.stat().st_mtime)
    assert "HEAT_SERVING_API_KEY" not in log.read_text()  # and never printed it

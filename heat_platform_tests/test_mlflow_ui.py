"""`heat-platform mlflow-ui` (what `make dev` starts next to `dagster dev`): the MLflow UI on the
platform's own store, at the address of the links in the Dagster UI, serving the runs' metrics
and artifacts over HTTP; SIGTERM (how `make dev` stops it) takes the whole server down."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from heat_platform.polling import wait_until
from heat_platform.serving.server import free_port

pytestmark = pytest.mark.server


def test_the_mlflow_ui_serves_the_platform_store_and_stops_on_sigterm(resources, platform_paths,
                                                                       tmp_path):
    store = resources["mlflow"].store()
    with store.start_run("plate", "seen-in-the-ui", {}) as run:
        store.mlflow().log_metric("score.validation_rmse", 0.125)
        store.mlflow().log_text("<html>report</html>", "gate/report.html")
    url = f"http://127.0.0.1:{free_port()}"
    command = [str(Path(sys.executable).with_name("heat-platform")), "--home",
               str(platform_paths.home), "mlflow-ui", "--url", url]
    ui = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: _answers(f"{url}/health"), timeout_s=120, interval_s=0.5,
                   what="the MLflow UI")
        got = httpx.get(f"{url}/api/2.0/mlflow/runs/get",
                        params={"run_id": run.info.run_id}).json()["run"]
        assert got["info"]["run_name"] == "seen-in-the-ui"
        assert got["data"]["metrics"][0] == {**got["data"]["metrics"][0],
                                             "key": "score.validation_rmse", "value": 0.125}
        page = httpx.get(store.artifact_download_url(run.info.run_id, "gate/report.html")
                         .replace(store.ui_url, url))
        assert page.status_code == 200 and page.text == "<html>report</html>"
    finally:
        ui.send_signal(signal.SIGTERM)
        output, _ = ui.communicate(timeout=60)
    assert ui.returncode == 0, output
    assert f"MLflow UI on {url}" in output
    assert not _answers(f"{url}/health")  # the server's process group stopped with it


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False

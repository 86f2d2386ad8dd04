"""The Dagster UI as an audit browser, driven in a real browser (Playwright on Debian's chromium).

After a small pipeline (one batch, a crude classical fit, a smoke PINN, the gate relaxed for a
smoke model, the champion and its audit trail), the Dagster webserver and the MLflow UI are
started on loopback; the browser opens the asset graph, dismisses Dagster's first-visit dialog,
finds every asset of the code location in it, opens the gate report's materialisation, follows
its MLflow link and sees the run's metrics, then opens a batch's Data Docs through their MLflow
link. Screenshots go to test-artifacts/ (git-ignored). Both servers are stopped after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from heat_platform.local import DagsterWebserver, MlflowUi
from heat_platform.paths import PROJECT_ROOT
from heat_platform.serving.server import free_port
from heat_platform.simulate import simulate_to_landing
from heat_platform_tests.assets.conftest import EXPERIMENT, RELAXED, TINY
from heat_platform_tests.conftest import (
    SensorDriver,
    install_mlflow_store,
    latest_materialization,
    materialize,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; .ci/run installs it when missing
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "browser"
PIPELINE = ["training_set", "classical_inversion", "pinn_model", "gate_report", "champion_model",
            "audit_trail"]
RUN_CONFIG = {"ops": {"classical_inversion": {"config": {"grid": 2, "n_steps": 2}},
                      "pinn_model": {"config": TINY}, "gate_report": {"config": RELAXED}}}
TIMEOUT_MS = 90_000  # a loaded 2-core machine renders slowly


@pytest.fixture
def platform(platform_paths, dagster_instance, mlflow_template, monkeypatch):
    """The small pipeline, its MLflow links pointing at the MLflow UI the test starts."""
    from heat_platform.resources import build_resources, resolved

    mlflow_url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HEAT_PLATFORM_MLFLOW_UI_URL", mlflow_url)
    install_mlflow_store(platform_paths, mlflow_template)
    resources = resolved(build_resources(platform_paths))
    simulate_to_landing(platform_paths.landing, EXPERIMENT, seed=1)
    SensorDriver(dagster_instance, resources).until_quiet()
    materialize(dagster_instance, resources, PIPELINE, EXPERIMENT, run_config=RUN_CONFIG)
    return platform_paths, dagster_instance, mlflow_url


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def test_an_auditor_walks_from_the_asset_graph_to_the_mlflow_run_and_the_data_docs(
        platform, browser):
    from heat_platform.definitions import defs

    paths, instance, mlflow_url = platform
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    dagster_ui = DagsterWebserver(paths, f"http://127.0.0.1:{free_port()}")
    mlflow_ui = MlflowUi(paths, mlflow_url)
    try:
        for server in (dagster_ui.start(), mlflow_ui.start()):  # both start at once
            server.wait_ready()
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        page.set_default_timeout(TIMEOUT_MS)

        # 1. the asset graph, every group expanded in its sidebar: every asset is listed
        page.goto(f"{dagster_ui.url}/asset-groups")
        page.get_by_role("button", name="Skip").click()  # "Join the Dagster community"
        groups = sorted({spec.group_name for asset in defs.assets for spec in asset.specs})
        assets = sorted(key.to_user_string() for asset in defs.assets for key in asset.keys)
        sidebar = "[class*=AssetSidebarNode_itemContainer]"
        for group in groups:
            page.locator(f"{sidebar}:has([title='{group}']) "
                         "button:has([aria-label=arrow_drop_down])").first.click()
        page.locator(f"{sidebar} [title='{assets[-1]}']").wait_for()
        listed = page.locator(f"{sidebar} [title]").evaluate_all("es => es.map(e => e.title)")
        page.screenshot(path=SCREENSHOTS / "1-asset-graph.png")
        assert set(assets) <= set(listed), sorted(set(assets) - set(listed))
        assert len(assets) == 13 and "audit_trail" in listed

        # 2. the gate report's materialisation, with its decision and MLflow link
        page.goto(f"{dagster_ui.url}/assets/gate_report?view=events&partition={EXPERIMENT}")
        page.get_by_text("Partition inclusion materialized in run").first.wait_for()
        decision = latest_materialization(instance, "gate_report", EXPERIMENT).metadata
        run_url = decision["mlflow run"].value
        link = page.locator(f"a[href='{run_url}']").first
        link.wait_for()
        page.screenshot(path=SCREENSHOTS / "2-gate-report.png", full_page=True)
        assert decision["decision"].value == "promote" and run_url.startswith(mlflow_url)

        # 3. the link opens the MLflow run (a new tab), which shows the gate's scores
        with page.expect_popup() as opened:
            link.click()
        run = opened.value
        run.set_default_timeout(TIMEOUT_MS)
        scores = decision["scores"].value["PINN"]
        run.get_by_text("score.validation_rmse", exact=True).wait_for()
        run.get_by_text(repr(scores["validation_rmse"]), exact=True).wait_for()
        run.get_by_text("score.residual_relative", exact=True).wait_for()
        run.screenshot(path=SCREENSHOTS / "3-mlflow-run.png", full_page=True)

        # 4. a batch's Data Docs, from the contract check's link, rendered by the MLflow UI
        check = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("validated_measurements"),
                             "great_expectations_contract"), limit=1)[0]
        docs = check.evaluation.metadata["data docs (MLflow)"].value
        page.goto(docs)
        report = page.frame_locator("iframe").first
        report.get_by_text("Expectation Validation Result").wait_for()
        page.screenshot(path=SCREENSHOTS / "4-data-docs.png")
    finally:
        dagster_ui.stop()
        mlflow_ui.stop()
    assert sorted(p.name for p in SCREENSHOTS.iterdir()) == [
        "1-asset-graph.png", "2-gate-report.png", "3-mlflow-run.png", "4-data-docs.png"]

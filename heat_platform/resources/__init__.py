"""Resources shared by the assets: the same classes locally and on Kubernetes, only their
arguments differ (see :func:`build_resources`)."""

from __future__ import annotations

from typing import Any

import dagster as dg

from heat_platform.paths import PlatformPaths
from heat_platform.resources.alerts import AlertWebhook
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings


def build_executor() -> dg.ExecutorDefinition:
    """One process per run on a laptop: a step's imports (torch, GX) cost more than its work."""
    return dg.in_process_executor


def build_resources(paths: PlatformPaths | None = None) -> dict[str, Any]:
    """The resources on ``paths`` (default: the platform home of the environment). Values that
    may carry secrets (the catalog's and MLflow's database URLs, the webhook URL) are given as
    ``dg.EnvVar`` when they come from the environment, so the Dagster UI shows the variable's
    name, never its value."""
    paths = paths or PlatformPaths.from_env()
    settings = PlatformSettings.load()
    tracking_uri = (dg.EnvVar("MLFLOW_TRACKING_URI") if settings.mlflow_tracking_uri
                    else paths.mlflow_tracking_uri)
    return {
        "storage": PlatformStorage(
            home=str(paths.home),
            catalog_url=dg.EnvVar("HEAT_PLATFORM_DB_URL") if settings.db_url else ""),
        "mlflow": MlflowTracking(tracking_uri=tracking_uri,
                                 artifact_root=str(paths.mlflow_artifacts),
                                 ui_url=settings.mlflow_ui_url),
        "alerts": AlertWebhook(url=dg.EnvVar("HEAT_PLATFORM_ALERT_WEBHOOK")
                               if settings.alert_webhook else ""),
        # Small values passed between assets (references to stored data and models) live with
        # the platform's data, so every run worker (local process or Kubernetes pod) sees them.
        "io_manager": dg.FilesystemIOManager(base_dir=str(paths.store / "dagster_io")),
    }


def resolved(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources`` as a run sees them, their ``dg.EnvVar`` values read from the environment:
    for using them outside a Dagster run (the CLI, scripts, tests)."""
    return {key: value.process_config_and_initialize()
            if isinstance(value, dg.ConfigurableResource) else value
            for key, value in resources.items()}

"""Resources shared by the assets: the same classes locally and on Kubernetes, only their
arguments differ (see :func:`build_resources`)."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from heat_platform.paths import PlatformPaths
from heat_platform.resources.alerts import AlertWebhook
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage


def build_executor() -> dg.ExecutorDefinition:
    """One process per run on a laptop: a step's imports (torch, GX) cost more than its work."""
    return dg.in_process_executor


def build_resources(paths: PlatformPaths | None = None) -> dict[str, Any]:
    paths = paths or PlatformPaths.from_env()
    return {
        "storage": PlatformStorage(home=str(paths.home)),
        "mlflow": MlflowTracking(tracking_uri=paths.mlflow_tracking_uri,
                                 artifact_root=str(paths.mlflow_artifacts)),
        "alerts": AlertWebhook(url=os.environ.get("HEAT_PLATFORM_ALERT_WEBHOOK", "")),
        # Small values passed between assets (references to stored data and models) live with
        # the platform's data, so every run worker (local process or Kubernetes pod) sees them.
        "io_manager": dg.FilesystemIOManager(base_dir=str(paths.store / "dagster_io")),
    }

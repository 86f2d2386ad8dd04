"""Resources shared by the assets, and the executor: the same classes locally and on Kubernetes,
only their arguments differ. :func:`deployment` is the one switch (``HEAT_PLATFORM_DEPLOYMENT``):

* ``local``: one process per run on this machine; the catalog and MLflow default to SQLite under
  the platform home.
* ``kubernetes``: one pod per step (dagster-k8s ``k8s_job_executor``; each step's op tags add
  what it needs, the training step a GPU node). The platform home is a volume every pod mounts
  (content store, training sets, checkpoints, reports, MLflow artifacts, bentos, serving log);
  the catalog and MLflow must be on a database server every pod reaches (PostgreSQL), never a
  SQLite file that pods would share over a network filesystem. The Dagster instance itself
  (PostgreSQL storage, K8sRunLauncher) comes from the Helm chart's values (deploy/helm/).
"""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg
from pydantic import SecretStr

from heat_platform.paths import PlatformPaths
from heat_platform.resources.alerts import AlertWebhook
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings

Deployment = Literal["local", "kubernetes"]

# What every step pod asks for unless its op tags say more (they are deep-merged over this: the
# training step's GPU_POD in assets/training.py). Measured on the 2-core machine: a step peaks
# at ~2.1 GiB (ingesting 1e7 rows); training the `accurate` profile uses 2 cores. Steps never
# call the Kubernetes API (the run's pod launches them), so they get no service account token.
STEP_POD = {
    "container_config": {"resources": {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "6Gi"},
    }},
    "pod_spec_config": {"automount_service_account_token": False},
}
K8S_EXECUTOR_CONFIG = {"step_k8s_config": STEP_POD}


def deployment(settings: PlatformSettings | None = None) -> Deployment:
    """Where the code location runs: ``local`` or ``kubernetes`` (HEAT_PLATFORM_DEPLOYMENT)."""
    return (settings or PlatformSettings.load()).deployment


def build_executor(mode: Deployment | None = None) -> dg.ExecutorDefinition:
    """local: every step of a run in the run's process (a step's imports, torch and GX, cost
    more than its work); kubernetes: every step in its own pod, through dagster-k8s."""
    if (mode or deployment()) == "kubernetes":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(K8S_EXECUTOR_CONFIG, name="k8s_job_executor")
    return dg.in_process_executor


def build_resources(paths: PlatformPaths | None = None,
                    mode: Deployment | None = None) -> dict[str, Any]:
    """The resources on ``paths`` (default: the platform home of the environment). Values that
    may carry secrets (the catalog's and MLflow's database URLs, the webhook URL) are given as
    ``dg.EnvVar`` when they come from the environment, so the Dagster UI shows the variable's
    name, never its value. In kubernetes mode both database URLs must name a server."""
    paths = paths or PlatformPaths.from_env()
    settings = PlatformSettings.load()
    if (mode or deployment(settings)) == "kubernetes":
        _require_server("HEAT_PLATFORM_DB_URL", settings.db_url)
        _require_server("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
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


def _require_server(variable: str, url: SecretStr | None) -> None:
    """Refuse a database that is a file (or nothing) where several pods write at once, and a
    URL whose driver is not installed (the message never shows the URL: it may hold a password)."""
    value = url.get_secret_value() if url else ""
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if not scheme or scheme.startswith(("sqlite", "file")):
        found = "unset" if not value else f"a local '{scheme or 'path'}' store"
        raise ValueError(
            f"HEAT_PLATFORM_DEPLOYMENT=kubernetes needs {variable} to name a database server "
            f"every pod reaches (e.g. postgresql+psycopg2://user:password@host/db), not "
            f"{found}: each step runs in its own pod, and SQLite files on a shared volume lose "
            "writes. See README, Scaling out.")
    if scheme == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the platform ships psycopg2
        # (the driver dagster-postgres uses), so the first connection would fail, in a pod.
        raise ValueError(f"{variable}: write postgresql+psycopg2://... (a bare postgresql:// "
                         "selects psycopg 3, which is not installed)")


def resolved(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources`` as a run sees them, their ``dg.EnvVar`` values read from the environment:
    for using them outside a Dagster run (the CLI, scripts, tests)."""
    return {key: value.process_config_and_initialize()
            if isinstance(value, dg.ConfigurableResource) else value
            for key, value in resources.items()}

"""MLflow tracking and model registry for the platform: a plain class the libraries use and the
Dagster resource (:class:`heat_platform.resources.mlflow.MlflowTracking`) hands out.

Defaults are embedded: a SQLite tracking/registry store and a local artifact root under the
platform home. One MLflow experiment per platform experiment; one registered model per platform
experiment (names in :mod:`heat_platform.names`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from heat_platform.names import (
    artifact_folder,
    mlflow_experiment_name,
    mlflow_reports_experiment_name,
)

if TYPE_CHECKING:
    import mlflow
    from mlflow import MlflowClient


@dataclass(frozen=True)
class MlflowStore:
    """Where runs, metrics, artifacts and registered models go."""

    tracking_uri: str  # MLflow tracking and registry URI
    artifact_root: str  # directory for the run artifacts of new experiments
    ui_url: str = "http://127.0.0.1:5000"  # base URL of the MLflow UI, for links

    def mlflow(self) -> mlflow:
        """The mlflow module pointed at this store (imported lazily: it is slow to import)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, experiment: str, *, reports: bool = False) -> str:
        """Get or create the MLflow experiment of a platform experiment (with ``reports``: the
        one holding its reports)."""
        client = self.client()
        name = (mlflow_reports_experiment_name if reports else mlflow_experiment_name)(experiment)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = Path(self.artifact_root) / artifact_folder(experiment)
        if reports:
            location = location / "reports"
        location.mkdir(parents=True, exist_ok=True)
        try:
            return client.create_experiment(name, artifact_location=location.as_uri())
        except Exception:  # created concurrently by another run
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    @contextmanager
    def start_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> Iterator:
        """An active MLflow run in the platform experiment's MLflow experiment."""
        mlflow = self.mlflow()
        experiment_id = self.experiment_id(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as run:
            yield run

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    def artifact_url(self, experiment_id: str, run_id: str, path: str) -> str:
        """The MLflow UI's page showing one artifact of a run (HTML is rendered there)."""
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}"

    def artifact_download_url(self, run_id: str, path: str) -> str:
        """The artifact's bytes over HTTP from the MLflow server (sent as an attachment)."""
        return f"{self.ui_url}/get-artifact?path={quote(path)}&run_uuid={run_id}"

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"

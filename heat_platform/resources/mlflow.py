"""MLflow tracking and model registry as a Pythonic Dagster resource.

dagster-mlflow's resource is the legacy function style, so this is a small ConfigurableResource
around MLflow itself. Defaults are embedded: a SQLite tracking/registry store and a local artifact
root under the platform home. One MLflow experiment per platform experiment; one registered model
per platform experiment (see :func:`registered_model_name`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    import mlflow
    from mlflow import MlflowClient

EXPERIMENT_PREFIX = "heat-platform/"
MODEL_PREFIX = "heat-pinn-"


def mlflow_experiment_name(experiment: str) -> str:
    return f"{EXPERIMENT_PREFIX}{experiment}"


def registered_model_name(experiment: str) -> str:
    """Registered-model name of a platform experiment (MLflow allows letters, digits, . _ -)."""
    return MODEL_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", experiment)


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, metrics, artifacts and registered models go."""

    tracking_uri: str = Field(description="MLflow tracking and registry URI (sqlite:///... by default).")
    artifact_root: str = Field(description="Directory for run artifacts of new experiments.")
    ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="Base URL of the MLflow UI, used for links in Dagster metadata "
        "(`make mlflow` serves it).",
    )

    def mlflow(self) -> mlflow:
        """The mlflow module pointed at this store (imported lazily: it is slow to import)."""
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow

    def client(self) -> MlflowClient:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def experiment_id(self, experiment: str) -> str:
        """Get or create the MLflow experiment of a platform experiment."""
        client = self.client()
        name = mlflow_experiment_name(experiment)
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = Path(self.artifact_root) / re.sub(r"[^A-Za-z0-9_.-]", "-", experiment)
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

    def model_version_url(self, name: str, version: str | int) -> str:
        return f"{self.ui_url}/#/models/{name}/versions/{version}"

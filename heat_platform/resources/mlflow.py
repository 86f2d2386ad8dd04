"""MLflow as a Dagster resource: the settings of :class:`~heat_platform.models.mlflow_store.MlflowStore`.

dagster-mlflow's ``mlflow_tracking`` resource is the legacy function style and starts a run per
Dagster run; the platform's runs are per model (one per training, one per classical fit), so the
resource here only carries where the store is and hands the library its plain class.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from heat_platform.models.mlflow_store import MlflowStore


class MlflowTracking(dg.ConfigurableResource):
    """Where runs, metrics, artifacts and registered models go."""

    tracking_uri: str = Field(description="MLflow tracking and registry URI (sqlite:///... by "
                              "default; MLFLOW_TRACKING_URI).")
    artifact_root: str = Field(description="Directory for run artifacts of new experiments.")
    ui_url: str = Field(default="http://127.0.0.1:5000", description="Base URL of the MLflow UI "
                        "in links shown by Dagster (`make dev` serves it).")

    def store(self) -> MlflowStore:
        return MlflowStore(self.tracking_uri, self.artifact_root, self.ui_url)

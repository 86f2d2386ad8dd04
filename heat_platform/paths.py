"""The one place that knows where the platform keeps things on disk.

Everything lives under one home directory (``HEAT_PLATFORM_HOME``, default ``./data``), so a
single machine needs nothing else and a Kubernetes deployment mounts one volume there::

    <home>/landing/<experiment>/problem.yaml          what users drop in
    <home>/landing/<experiment>/<batch>.parquet|csv
    <home>/store/blobs, <home>/store/training_sets     the platform's own immutable storage
    <home>/reports/                                    Data Docs, gate and drift reports (HTML)
    <home>/platform.db                                 catalog: batch versions, audit log, deployments
    <home>/dagster_home/                               Dagster instance (SQLite storage)
    <home>/mlflow/mlflow.db, <home>/mlflow/artifacts   MLflow tracking and registry
    <home>/bentoml/                                    BentoML model and bento store
    <home>/serving/                                    serving log and running-server records
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heat_platform.settings import PlatformSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    return PlatformSettings.load().home.resolve()


@dataclass(frozen=True)
class PlatformPaths:
    home: Path

    @classmethod
    def from_env(cls) -> PlatformPaths:
        return cls(default_home())

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def store(self) -> Path:
        return self.home / "store"

    @property
    def blobs(self) -> Path:
        """Content-addressed, immutable files (landing copies, validated and quarantined rows)."""
        return self.store / "blobs"

    @property
    def training_sets(self) -> Path:
        return self.store / "training_sets"

    @property
    def reports(self) -> Path:
        """HTML for people: GX Data Docs, gate reports, Evidently drift reports."""
        return self.home / "reports"

    @property
    def catalog_url(self) -> str:
        url = PlatformSettings.load().db_url
        return url.get_secret_value() if url else f"sqlite:///{self.home / 'platform.db'}"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster_home"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        uri = PlatformSettings.load().mlflow_tracking_uri
        return uri.get_secret_value() if uri else f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def bentoml_home(self) -> Path:
        # Always under home: a BENTOML_HOME in the environment may be the default set for
        # another platform home (heat_platform/__init__), and bentos must follow their platform.
        return self.home / "bentoml"

    @property
    def serving(self) -> Path:
        return self.home / "serving"

    def experiment_landing(self, experiment: str) -> Path:
        return self.landing / experiment

    def ensure(self) -> PlatformPaths:
        for directory in (self.landing, self.blobs, self.training_sets, self.reports,
                          self.dagster_home, self.mlflow_artifacts, self.bentoml_home,
                          self.serving):
            directory.mkdir(parents=True, exist_ok=True)
        return self

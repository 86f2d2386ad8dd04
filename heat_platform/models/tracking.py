"""The one MLflow logging helper: tags that make a run traceable, params, figures, models.

Used inside ``MlflowStore.start_run(...)`` (an active run); every training-like run of the
platform (PINN, classical inversion, gate) goes through here, so they all carry the same tags:
git commit, data version, partitions, Dagster run id, package versions, device. Reports (Data
Docs, drift reports) go to a run of their own in the experiment's reports experiment
(:func:`log_report`).
"""

from __future__ import annotations

import functools
import json
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from heat_platform.files import file_digest
from heat_platform.names import RUN_TAG_PREFIX
from heat_platform.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from heat_platform.models.mlflow_store import MlflowStore

PACKAGES = ("torch", "deepxde", "dagster", "mlflow", "numpy", "scipy", "polars", "heat-platform")
MODEL_ARTIFACTS = "model"  # the run's artifact folder holding the registered model file
KIND_TAG, SHA256_TAG, FILE_TAG = "kind", "sha256", "file"  # tags of every model version


@functools.cache
def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def run_tags(*, experiment: str, kind: str, data_version: str, partitions: list[str],
             dagster_run_id: str, device: str = "cpu") -> dict[str, str]:
    tags = {
        "heat_platform.experiment": experiment,
        "heat_platform.kind": kind,
        "heat_platform.data_version": data_version,
        "heat_platform.partitions": ",".join(partitions)[:4000],
        "heat_platform.dagster_run_id": dagster_run_id,
        "heat_platform.device": device,
        "mlflow.source.git.commit": git_commit(),
    }
    tags.update({f"heat_platform.version.{k}": v for k, v in package_versions().items()})
    return tags


def log_params(mlflow, params: dict[str, Any], prefix: str = "") -> None:
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update({f"{prefix}{key}.{k}": v for k, v in value.items()})
        else:
            flat[f"{prefix}{key}"] = value
    mlflow.log_params({k: json.dumps(v) if isinstance(v, list | tuple) else v
                       for k, v in flat.items()})


def log_bytes(mlflow, content: bytes, artifact_file: str, run_id: str | None = None) -> None:
    """Log ``content`` as the artifact ``artifact_file`` (e.g. a PNG) of the active run, or of
    ``run_id`` (a finished run, e.g. the gate adding its report to the candidate's run)."""
    import tempfile

    path = Path(artifact_file)
    folder = str(path.parent) if path.parent.parts else None
    with tempfile.TemporaryDirectory() as directory:
        local = Path(directory) / path.name
        local.write_bytes(content)
        if run_id is None:
            mlflow.log_artifact(str(local), artifact_path=folder)
        else:
            mlflow.MlflowClient().log_artifact(run_id, str(local), artifact_path=folder)


def register_model(mlflow, path: Path, registered_name: str, *, kind: str,
                   tags: dict[str, str]) -> str:
    """Log the TorchScript serving artifact under the active run's ``model/`` and register it
    as a new version of ``registered_name``; returns the version.

    The file is stored as it is (no pickle anywhere on the model path): what loads it later is
    ``torch.jit.load``, after :func:`heat_platform.models.registry.ModelRegistry.download` has
    checked it against the ``sha256`` recorded here on the version. The version's ``kind`` tag
    says which kind of model it is (``pinn`` or ``classical``).
    """
    mlflow.log_artifact(str(path), artifact_path=MODEL_ARTIFACTS)
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(registered_name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        registered_name, source=f"runs:/{run_id}/{MODEL_ARTIFACTS}", run_id=run_id,
        tags={**tags, KIND_TAG: kind, SHA256_TAG: file_digest(path), FILE_TAG: path.name})
    return str(version.version)


@dataclass(frozen=True)
class LoggedReport:
    """A report logged as the artifacts of its own MLflow run (see :func:`log_report`)."""

    experiment_id: str
    run_id: str
    prefix: str  # the artifact folder holding the report's files

    def path(self, relative: str | Path) -> str:
        """The artifact path of one of the report's files (relative to the report's root)."""
        return f"{self.prefix}/{PurePosixPath(Path(relative))}"


def log_report(store: MlflowStore, experiment: str, name: str, root: Path, files: list[Path],
               tags: dict[str, str]) -> LoggedReport:
    """Log ``files`` (under ``root``, keeping their relative paths under a folder ``name``) as
    the artifacts of a new run of the experiment's reports experiment, so that the MLflow UI
    renders them and its server serves them over HTTP: Data Docs and drift reports are
    reachable from a browser on another machine, not only as file:// paths."""
    client = store.client()
    experiment_id = store.experiment_id(experiment, reports=True)
    run = client.create_run(experiment_id, run_name=name, tags={
        f"{RUN_TAG_PREFIX}experiment": experiment, f"{RUN_TAG_PREFIX}kind": "report", **tags})
    status = "FAILED"
    try:
        for file in files:
            folder = PurePosixPath(name, *file.relative_to(root).parent.parts)
            client.log_artifact(run.info.run_id, str(file), artifact_path=str(folder))
        status = "FINISHED"
    finally:
        client.set_terminated(run.info.run_id, status)
    return LoggedReport(experiment_id, run.info.run_id, name)

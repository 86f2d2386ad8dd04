"""The one MLflow logging helper: tags that make a run traceable, params, figures, models.

Used inside ``MlflowStore.start_run(...)`` (an active run); every training-like run of the
platform (PINN, classical inversion, gate) goes through here, so they all carry the same tags:
git commit, data version, partitions, Dagster run id, package versions, device.
"""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from heat_platform.paths import PROJECT_ROOT

PACKAGES = ("torch", "deepxde", "dagster", "mlflow", "numpy", "scipy", "polars", "heat-platform")
TORCH_REQUIREMENT = "torch==2.13.0"


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


def register_torchscript(mlflow, path: Path, registered_name: str, tags: dict[str, str]) -> str:
    """Log the serving artifact as the run's MLflow model and register it; returns the version.

    An input example and explicit requirements keep MLflow from importing half the
    environment to infer them (seconds per call otherwise).
    """
    import numpy as np
    import torch

    module = torch.jit.load(str(path), map_location="cpu")
    example = np.array([[0.5, 0.5, 0.0]], dtype=np.float32)
    info = mlflow.pytorch.log_model(
        module, name="model", registered_model_name=registered_name, input_example=example,
        pip_requirements=[TORCH_REQUIREMENT], serialization_format="pickle",
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(registered_name, version, key, value)
    return version

"""What the model assets hand each other: small references to registered model versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelCandidate:
    """A registered MLflow model version and where its serving artifact lies locally."""

    experiment: str
    kind: str  # "pinn" or "classical"
    model_name: str  # registered model (pinn) or "" (classical runs are not registered)
    version: str
    run_id: str
    mlflow_experiment_id: str
    data_version: str
    artifact: Path  # TorchScript (pinn) or .npz of the fitted fields (classical)
    metrics: dict[str, float] = field(default_factory=dict)
    dagster_run_id: str = ""


@dataclass(frozen=True)
class Champion:
    """The version an experiment serves, with its lineage and local serving artifact."""

    experiment: str
    model_name: str
    version: str
    run_id: str
    data_version: str
    training_dagster_run_id: str
    artifact: Path
    domain: dict[str, list[float]]

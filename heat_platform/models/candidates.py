"""What the model assets hand each other: small references to registered model versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelCandidate:
    """A registered MLflow model version and where its serving artifact lies locally."""

    experiment: str
    kind: str  # "pinn" or "classical"
    model_name: str  # the experiment's registered model
    version: str
    run_id: str
    mlflow_experiment_id: str
    data_version: str
    artifact: Path  # the TorchScript serving artifact (either kind)
    metrics: dict[str, float] = field(default_factory=dict)
    dagster_run_id: str = ""
    profile: str = ""  # the PINN profile it was trained with (pinn only)


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
    kind: str = "pinn"  # "pinn" or "classical"

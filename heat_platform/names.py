"""Every name the platform gives things, defined once: experiment names, MLflow experiments and
registered models, registry aliases and version tags, BentoML models, run tags.

A foundation module (it imports nothing of the platform), so every layer may use it.
"""

from __future__ import annotations

import re

# An experiment's name: its problem.yaml's ``name``, its landing folder, its partition key.
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# MLflow: one experiment and one registered model per platform experiment.
MLFLOW_EXPERIMENT_PREFIX = "heat-platform/"
REGISTERED_MODEL_PREFIX = "heat-model-"  # one registered model per experiment, of any kind

# Aliases of a registered model: what is served, what a plain rollback returns to, the newest.
CHAMPION, PREVIOUS, CHALLENGER = "champion", "previous", "challenger"
# Tags on model versions: the gate's rejection (its reasons), a promotion awaiting approval.
REJECTED, PENDING = "rejected", "pending_approval"
JUDGED = "gate_judged"  # the Dagster run whose gate judged the version (each is judged once)

# Tags of Dagster runs: why a run was launched, and what a retraining run trains on.
TRIGGER = "heat_platform/trigger"
ACTOR = "heat_platform/actor"
SHA256 = "heat_platform/sha256"
REGIME_START = "heat_platform/regime_start_seq"
DRIFT_BATCH = "heat_platform/drift_batch"
DRIFTED_FROM_CHAMPION = "heat_platform/drifted_from_champion"
ESCALATION = "escalation"  # the TRIGGER of a run that trains a rejected PINN's experiment again
ESCALATED_FROM = "heat_platform/escalated_from_profile"

# Tags of MLflow runs (with tracking.run_tags): the lineage of every training-like run.
RUN_TAG_PREFIX = "heat_platform."


def _slug(experiment: str) -> str:
    """The experiment name with anything MLflow and BentoML names refuse replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", experiment)


def mlflow_experiment_name(experiment: str) -> str:
    return f"{MLFLOW_EXPERIMENT_PREFIX}{experiment}"


def mlflow_reports_experiment_name(experiment: str) -> str:
    """The MLflow experiment holding an experiment's reports (Data Docs, drift reports), apart
    from its training runs."""
    return f"{mlflow_experiment_name(experiment)}/reports"


def registered_model_name(experiment: str) -> str:
    """Registered-model name of a platform experiment (MLflow allows letters, digits, . _ -)."""
    return REGISTERED_MODEL_PREFIX + _slug(experiment)


def artifact_folder(experiment: str) -> str:
    """The experiment's folder name in MLflow's artifact root."""
    return _slug(experiment)


def bento_model_name(experiment: str) -> str:
    """The BentoML model holding an experiment's champions (lower case, as BentoML wants)."""
    return REGISTERED_MODEL_PREFIX + "".join(
        ch if ch.isalnum() or ch in "-_." else "-" for ch in experiment.lower())

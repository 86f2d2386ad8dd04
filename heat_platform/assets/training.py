"""Stage 4, training: a physics-informed neural network per experiment, tracked in MLflow.

The PINN (DeepXDE, PyTorch) learns u(x, y, t) and a(x, y) together from the training set and
the PDE; the run, its metrics, figures and model go to MLflow, and the model becomes a new
version of the experiment's registered model (alias ``challenger``) for the gate to judge.
Training runs one at a time (pool ``pinn_training``), on CUDA when there is one, on a GPU node
under Kubernetes, resumes from its last checkpoint when a run is retried, and stops with a
clear failure when the loss diverges.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from heat_platform.assets.configs import derived_config
from heat_platform.assets.partitions import experiments
from heat_platform.data.ingest import StoredTrainingSet, current_spec
from heat_platform.models.candidates import ModelCandidate
from heat_platform.models.figures import markdown_image
from heat_platform.pinn.config import PROFILES, PINNConfig
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage
from heat_platform.settings import PlatformSettings

# Under Kubernetes (k8s_job_executor) the training step's pod asks for one GPU and lands on a GPU
# node: the label NVIDIA's GPU feature discovery (GPU operator) puts on such nodes, and the
# toleration of the taint GPU node pools usually carry. Other clusters label GPU nodes otherwise
# (README, Scaling out).
GPU_POD = {"dagster-k8s/config": {
    "container_config": {"resources": {
        "requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1", "memory": "16Gi"},
    }},
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}}


SETTINGS = PlatformSettings.load()


def retrain_condition() -> dg.AutomationCondition:
    """Train once when an experiment's first training set exists; after that, retraining is
    asked for by drift (see monitoring), by hand, or on a schedule when
    HEAT_PLATFORM_RETRAIN_CRON is set (off by default)."""
    condition = dg.AutomationCondition.on_missing()
    if SETTINGS.retrain_cron:
        condition = condition | dg.AutomationCondition.on_cron(SETTINGS.retrain_cron)
    return condition


class _Profile(dg.Config):
    def pinn_config(self) -> PINNConfig:
        """The profile with every field given in the run config applied."""
        overrides = {name: getattr(self, name) for name in self.model_fields_set
                     if name != "profile" and getattr(self, name) is not None}
        return PINNConfig.profile(self.profile, **overrides)


# Hyper-parameters: a documented profile (heat_platform.pinn.config.PROFILES), and any field of
# PINNConfig given in the run config overrides it. Runs nobody configured (automation,
# sensors) use $HEAT_PLATFORM_PINN_PROFILE.
PINNTrainingConfig = derived_config(
    "PINNTrainingConfig", PINNConfig, base=_Profile, overrides_only=True,
    doc="Hyper-parameters: ``profile`` picks a documented set; any field given overrides it.",
    profile=(Literal[tuple(PROFILES)], Field(
        default=SETTINGS.pinn_profile,
        description=" ".join(f"{name}: {profile.description}." for name, profile in
                             PROFILES.items()) + " Default: $HEAT_PLATFORM_PINN_PROFILE or fast.")),
)


@dg.asset(
    partitions_def=experiments,
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=["team:heat-platform"],
    code_version="1",
    pool="pinn_training",
    op_tags=GPU_POD,
    retry_policy=dg.RetryPolicy(max_retries=1, delay=5),
    automation_condition=retrain_condition(),
)
def pinn_model(context: dg.AssetExecutionContext, config: PINNTrainingConfig,
               training_set: StoredTrainingSet, storage: PlatformStorage,
               mlflow: MlflowTracking) -> dg.Output[ModelCandidate]:
    """A PINN for u(x, y, t) and a(x, y), registered in MLflow as the experiment's challenger."""
    from heat_platform.models.training import fit_pinn  # torch, DeepXDE, MLflow: slow imports
    from heat_platform.pinn.trainer import TrainingDiverged

    _, spec = current_spec(storage.catalog(), training_set.experiment)
    pinn_config = config.pinn_config()
    context.log.info(f"training on {training_set.data_version[:12]} with {pinn_config}")

    def progress(step: int, metrics: dict[str, float]) -> None:
        member, _, _ = next(iter(metrics)).rpartition("/")  # member<k>/ in an ensemble
        shown = ", ".join(f"{k.rpartition('/')[2]}={v:.4g}" for k, v in metrics.items()
                          if k.rpartition("/")[2].startswith(("loss", "val")))
        context.log.info(f"{member + ' ' if member else ''}step {step}: {shown}")

    try:
        outcome = fit_pinn(
            mlflow.store(), training_set, spec, pinn_config,
            models_dir=storage.paths.store / "models",
            checkpoint_dir=storage.paths.store / "checkpoints" / training_set.experiment,
            dagster_run_id=context.run_id, progress=progress,
        )
    except TrainingDiverged as error:
        raise dg.Failure(description=f"training diverged, no model registered: {error}",
                         metadata={"step": error.step, "losses": dg.MetadataValue.json(error.losses)},
                         allow_retries=False) from error
    candidate, scores = outcome.candidate, outcome.scores
    if outcome.resumed_from_step:
        context.log.info(f"resumed from the checkpoint at step {outcome.resumed_from_step}")
    return dg.Output(
        candidate,
        metadata={
            "mlflow run": dg.MetadataValue.url(outcome.run_url),
            "registered model": f"{candidate.model_name} v{candidate.version} (alias challenger)",
            "validation RMSE": scores.validation_rmse,
            "RMSE / noise": scores.rmse_to_noise,
            "relative PDE residual": scores.residual_relative,
            "a range": f"[{scores.a_min:.3g}, {scores.a_max:.3g}]",
            **({"relL2(a) vs truth": scores.rel_l2_a} if scores.rel_l2_a is not None else {}),
            **({"ensemble members": pinn_config.ensemble,
                "a spread across members (RMS std)": outcome.spread["rms"]}
               if outcome.spread else {}),
            "iterations": outcome.iterations,
            "training seconds": round(outcome.wall_time_s, 1),
            "resumed from step": outcome.resumed_from_step,
            "data_version": candidate.data_version,
            "a(x, y)": dg.MetadataValue.md(markdown_image(outcome.figures["diffusivity.png"],
                                                          "a(x, y)")),
        },
        data_version=dg.DataVersion(candidate.run_id),
    )

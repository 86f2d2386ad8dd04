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
from heat_platform.names import ESCALATED_FROM, ESCALATION, TRIGGER
from heat_platform.pinn.config import PROFILES, STRONGER, PINNConfig
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
        if "max_minutes" not in overrides and SETTINGS.pinn_max_minutes is not None:
            overrides["max_minutes"] = SETTINGS.pinn_max_minutes
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
            dagster_run_id=context.run_id, profile=config.profile, progress=progress,
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
            "stopped by": outcome.stopped_by,
            "training seconds": round(outcome.wall_time_s, 1),
            "resumed from step": outcome.resumed_from_step,
            "data_version": candidate.data_version,
            "a(x, y)": dg.MetadataValue.md(markdown_image(outcome.figures["diffusivity.png"],
                                                          "a(x, y)")),
        },
        data_version=dg.DataVersion(candidate.run_id),
    )


# What an escalation run materialises; its run requests name them (see monitoring.RETRAINED)
ESCALATED = ("pinn_model", "gate_report", "champion_model", "deployed_bento")

escalate_job = dg.define_asset_job(
    "escalate",
    selection=dg.AssetSelection.assets(*ESCALATED),
    partitions_def=experiments,
    description="Train an experiment's PINN again with the stronger profile after the gate "
    "rejected it for its fit, and take it through the gate (escalation_sensor launches it).",
)


@dg.sensor(job=escalate_job, minimum_interval_seconds=SETTINGS.sensor_interval,
           default_status=dg.DefaultSensorStatus.RUNNING)
def escalation_sensor(context: dg.SensorEvaluationContext):
    """When the gate rejects a PINN for its fit (held-out RMSE or PDE residual), train it once
    more with the stronger profile (heat_platform.pinn.config.STRONGER) before giving up: one
    run per training set (run key ``escalate:<experiment>:<data version>``). Both attempts stay
    in MLflow, and the second gate report judges the new PINN against whatever is champion."""
    after = int(context.cursor) if context.cursor else None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("gate_report"), after_storage_id=after),
        limit=100, ascending=True).records
    requests = []
    for record in records:
        metadata = record.asset_materialization.metadata
        if not (metadata.get("escalate") and metadata["escalate"].value):
            continue
        profile = metadata["pinn profile"].value
        requests.append(dg.RunRequest(
            run_key=f"escalate:{record.partition_key}:{metadata['data_version'].value}",
            partition_key=record.partition_key,
            asset_selection=[dg.AssetKey(name) for name in ESCALATED],
            run_config={"ops": {"pinn_model": {"config": {"profile": STRONGER[profile]}}}},
            tags={TRIGGER: ESCALATION, ESCALATED_FROM: profile}))
    cursor = str(records[-1].storage_id) if records else context.cursor
    return dg.SensorResult(run_requests=requests, cursor=cursor)

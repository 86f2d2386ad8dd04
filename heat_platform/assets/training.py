"""Stage 4, training: a physics-informed neural network per experiment, tracked in MLflow.

The PINN (DeepXDE, PyTorch) learns u(x, y, t) and a(x, y) together from the training set and
the PDE; the run, its metrics, figures and model go to MLflow, and the model becomes a new
version of the experiment's registered model (alias ``challenger``) for the gate to judge.
Training runs one at a time (pool ``pinn_training``), on CUDA when there is one, on a GPU node
under Kubernetes, resumes from its last checkpoint when a run is retried, and stops with a
clear failure when the loss diverges.
"""

import dataclasses
import os
from typing import Literal

import dagster as dg
from pydantic import Field

from heat_platform.assets.partitions import experiments
from heat_platform.data.ingest import StoredTrainingSet, current_spec
from heat_platform.models.candidates import ModelCandidate
from heat_platform.models.figures import markdown_image
from heat_platform.resources.mlflow import MlflowTracking
from heat_platform.resources.storage import PlatformStorage

# Under Kubernetes (k8s_job_executor / K8sRunLauncher) the training pod asks for a GPU.
GPU_POD = {"dagster-k8s/config": {"container_config": {"resources": {
    "requests": {"cpu": "2", "memory": "8Gi"},
    "limits": {"nvidia.com/gpu": "1", "memory": "16Gi"},
}}}}


def retrain_condition() -> dg.AutomationCondition:
    """Train once when an experiment's first training set exists; after that, retraining is
    asked for by drift (see monitoring), by hand, or on a schedule when
    HEAT_PLATFORM_RETRAIN_CRON is set (off by default)."""
    condition = dg.AutomationCondition.on_missing()
    cron = os.environ.get("HEAT_PLATFORM_RETRAIN_CRON")
    if cron:
        condition = condition | dg.AutomationCondition.on_cron(cron)
    return condition


# The profile of runs nobody configured (automation, sensors): HEAT_PLATFORM_PINN_PROFILE.
DEFAULT_PROFILE = os.environ.get("HEAT_PLATFORM_PINN_PROFILE", "fast")
SMOKE = {"adam_iterations": 100, "lbfgs_iterations": 20, "n_domain": 200, "hidden_u": 16,
         "hidden_a": 8, "depth_a": 1}
QUICK = {"adam_iterations": 200, "lbfgs_iterations": 150, "n_domain": 500}


class PINNTrainingConfig(dg.Config):
    """Hyper-parameters. ``profile`` picks a documented set; any field given overrides it."""

    profile: Literal["fast", "accurate", "quick", "smoke"] = Field(
        default=DEFAULT_PROFILE, description="fast: the demo's, 1-3 min on 2 cores. accurate: "
        "the benchmark profile, three networks from different seeds merged into one, each with a "
        "warm-started from the classical inversion and the data misfit floored at the noise "
        "level (PINNacle HeatInv L2RE 0.013-0.039 over ten noise draws, mean 0.030, in 3.5-7 "
        "min on 2 cores). quick: "
        "about 40 s, coarse (RMSE ~1.5 noise levels on the demo experiment). smoke: seconds, to "
        "test the plumbing; its models do not pass the gate. Default: "
        "$HEAT_PLATFORM_PINN_PROFILE or fast.")
    adam_iterations: int | None = Field(default=None, description="Adam steps before L-BFGS.")
    adam_lr: float | None = Field(default=None, description="Adam learning rate.")
    lbfgs_iterations: int | None = Field(default=None, description="L-BFGS steps at most.")
    n_domain: int | None = Field(default=None, description="Collocation points (resampled).")
    weight_pde: float | None = Field(default=None, description="Weight of the PDE residual loss.")
    weight_data: float | None = Field(default=None, description="Weight of the data loss.")
    misfit_floor: float | None = Field(
        default=None, description="Data misfit (units of the noise variance) below which fitting "
        "the data earns nothing more, so the PDE residual takes over: 1 is the noise level, 0 "
        "turns it off (accurate profile: 1). Needs the experiment's noise level, and trusts it: "
        "with sigma stated at twice the real noise, u misses the data by the stated sigma.")
    hidden_u: int | None = Field(default=None, description="Width of the u network.")
    depth_u: int | None = Field(default=None, description="Hidden layers of the u network.")
    hidden_a: int | None = Field(default=None, description="Width of the a network.")
    depth_a: int | None = Field(default=None, description="Hidden layers of the a network.")
    warm_start_a: bool | None = Field(
        default=None, description="Start a from the classical inversion of the same training set "
        "(seconds) instead of from the boundary value (on in the accurate profile).")
    freeze_a_steps: int | None = Field(
        default=None, description="Keep a fixed for this many steps (Adam's, then L-BFGS's) while u "
        "fits the data and the PDE, then train both (accurate profile: 500, all of Adam).")
    seed: int | None = Field(default=None, description="Seed of initialisation and sampling.")
    ensemble: int | None = Field(
        default=None, description="Members trained one after the other from different seeds "
        "and merged into one model: mean u, geometric mean a (accurate profile: 3). Costs that "
        "many trainings; the spread of their a is logged as an uncertainty map.")
    max_minutes: float | None = Field(default=None, description="Wall-time budget of training.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when available, else CPU.")
    threads: int | None = Field(default=None, description="CPU threads for torch (default: all).")

    def pinn_config(self):
        from heat_platform.pinn.pinn import PINNConfig

        base = PINNConfig.accurate() if self.profile == "accurate" else PINNConfig.fast()
        if self.profile in ("quick", "smoke"):
            base = dataclasses.replace(base, **(QUICK if self.profile == "quick" else SMOKE))
        overrides = {name: getattr(self, name) for name in self.model_fields_set
                     if name not in ("profile", "device", "threads")
                     and getattr(self, name) is not None}
        return dataclasses.replace(base, device=self.device, threads=self.threads, **overrides)


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
    from heat_platform.pinn.pinn import TrainingDiverged

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
            mlflow, training_set, spec, pinn_config,
            models_dir=storage.paths.store / "models",
            checkpoint_dir=storage.paths.store / "checkpoints" / training_set.experiment,
            dagster_run_id=context.run.run_id, progress=progress,
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
